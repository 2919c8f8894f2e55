// expect: agent option schema is not a valid JSON Schema:
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("typed", { schema: { type: "no-such-type" } });
