// expect: workflow metadata must be a literal object (no variables, calls, spreads or `${}` templates)
// kind: metadata
// calls: 0
const name = "computed";
export const meta = { name, description: "computed" };
export default await agent("never");
