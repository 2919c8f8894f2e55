// expect: the workflow's result cannot be converted to JSON: TypeError:
export const meta = { name: "error", description: "Meets one error message" };
const a = {};
a.self = a;
export default a;
