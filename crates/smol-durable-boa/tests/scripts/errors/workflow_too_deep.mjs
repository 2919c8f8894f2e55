// expect: workflow nesting depth 5 exceeds the maximum of 4
export const meta = { name: "error", description: "Meets one error message" };
export default await workflow({ scriptPath: "./workflow_too_deep.mjs" });
