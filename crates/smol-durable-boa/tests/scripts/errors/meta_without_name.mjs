// expect: meta.name is required and must be a string
// kind: metadata
// calls: 0
export const meta = { description: "no name" };
export default await agent("never");
