// expect: the workflow's result cannot be converted to JSON: RangeError: the workflow's result is nested deeper than 100 levels
export const meta = { name: "error", description: "Meets one error message" };
let a = [];
for (let i = 0; i < 100000; i++) a = [a];
export default a;
