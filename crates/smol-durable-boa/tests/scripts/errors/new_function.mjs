// expect: eval and new Function are not allowed in workflows
export const meta = { name: "error", description: "Meets one error message" };
export default new Function("return 1")();
