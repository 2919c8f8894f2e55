// expect: the workflow exceeded the JavaScript recursion limit (runaway recursion?)
// kind: limit
export const meta = { name: "error", description: "Meets one error message" };
function f(n) { return f(n + 1) + 1; }
export default f(0);
