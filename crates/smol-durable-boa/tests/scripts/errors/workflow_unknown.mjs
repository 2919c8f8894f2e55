// expect: Unknown workflow: nope
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await workflow("nope");
