// expect: the workflow's result cannot be converted to JSON: TypeError:
export const meta = { name: "error", description: "Meets one error message" };
export default { n: 10n };
