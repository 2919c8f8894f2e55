// expect: Structured output did not match JSON Schema: / schema is invalid:
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("typed", { schema: { type: "no-such-type" } });
