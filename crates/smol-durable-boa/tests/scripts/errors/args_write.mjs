// expect: TypeError: Cannot modify workflow value
// kind: thrown
export const meta = { name: "error", description: "Meets one error message" };
args.topic = "changed";
export default args;
