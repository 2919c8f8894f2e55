// Structured output: the second call uses fields of the first.
export const meta = { name: "schema", description: "schema outputs feeding later calls" };

const person = await agent("extract the person", {
  schema: {
    type: "object",
    properties: { name: { type: "string" }, age: { type: "integer", minimum: 18 } },
    required: ["name", "age"],
  },
});
const greeting = await agent(`greet ${person.name} aged ${person.age}`);
const tags = await agent("tag the greeting", {
  schema: { type: "array", items: { type: "string", enum: ["warm", "short"] }, minItems: 2 },
});
export default { person, greeting, tags };
