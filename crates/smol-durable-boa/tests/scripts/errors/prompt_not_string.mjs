// expect: TypeError: agent(prompt, options) needs a string prompt, got number
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent(42);
