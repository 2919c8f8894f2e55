// expect: eval and new Function are not allowed in workflows
export const meta = { name: "error", description: "Meets one error message" };
export default eval("1 + 1");
