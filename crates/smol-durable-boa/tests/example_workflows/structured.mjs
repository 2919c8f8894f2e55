// Structured output: the schema travels to the provider with the call.
export const meta = { name: "structured", description: "Extracts a record" };

const person = await agent("extract the person", {
  schema: {
    type: "object",
    properties: { name: { type: "string" }, age: { type: "integer", minimum: 0 } },
    required: ["name", "age"],
  },
});
export default { greeting: `hello ${person.name}`, nextYear: person.age + 1 };
