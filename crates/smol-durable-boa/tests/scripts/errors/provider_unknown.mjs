// expect: Unknown agent provider: nope
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("who", { provider: "nope" });
