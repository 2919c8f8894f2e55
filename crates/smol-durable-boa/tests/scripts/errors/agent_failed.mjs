// expect: scripted failure
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("fails");
