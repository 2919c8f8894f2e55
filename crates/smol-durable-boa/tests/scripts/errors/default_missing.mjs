// expect: workflow has no default export: add `export default <value | promise | function(args, ctx)>`
// kind: metadata
export const meta = { name: "error", description: "Meets one error message" };
export const answer = 42;
