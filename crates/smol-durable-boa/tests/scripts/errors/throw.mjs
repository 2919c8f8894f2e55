// expect: Error: boom here
// kind: thrown
// at: 7:7
// calls: 1
export const meta = { name: "error", description: "Meets one error message" };
await agent("first");
throw new Error("boom here");
export default 1;
