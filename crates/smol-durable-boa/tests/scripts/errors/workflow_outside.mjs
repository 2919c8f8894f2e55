// expect: workflow path "../child.mjs" resolves outside the workflow directory
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await workflow({ scriptPath: "../child.mjs" });
