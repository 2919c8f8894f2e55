// expect: budget exhausted: spent 4 of 3 output tokens
// budget: 3
// calls: 1
export const meta = { name: "error", description: "Meets one error message" };
await agent("first");
export default await agent("second");
