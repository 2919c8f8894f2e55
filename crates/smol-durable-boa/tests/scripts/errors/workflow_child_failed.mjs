// expect: failed: Error: the child gave up
export const meta = { name: "error", description: "Meets one error message" };
export default await workflow({ scriptPath: "./lib/failing_child.mjs" });
