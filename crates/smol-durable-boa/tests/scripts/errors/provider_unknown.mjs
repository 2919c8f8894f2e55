// expect: unknown agent provider "nope"; registered providers: scripted
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("who", { provider: "nope" });
