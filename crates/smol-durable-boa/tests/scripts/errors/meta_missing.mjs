// expect: workflow metadata is missing: add `export const meta = { name: "...", description: "..." }`
// kind: metadata
// calls: 0
export default await agent("never");
