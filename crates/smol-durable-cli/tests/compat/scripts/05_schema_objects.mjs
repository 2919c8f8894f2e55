export const meta = { name: "schema-objects", description: "Debug provider: object keys order, required without properties, nested objects" };

const schemas = {
  propertyOrder: { type: "object", properties: { zeta: { type: "string" }, alpha: { type: "integer" }, mid: { type: "boolean" } } },
  requiredWithoutProperties: { type: "object", properties: { b: { type: "string" } }, required: ["z", "b", "a"] },
  additionalPropertiesIgnored: { type: "object", additionalProperties: { type: "string" } },
  additionalPropertiesFalse: { type: "object", properties: { k: { type: "null" } }, additionalProperties: false },
  emptyObject: { type: "object" },
  trueProperty: { type: "object", properties: { t: true } },
  numericLikeKeys: { type: "object", properties: { "10": { type: "integer" }, "2": { type: "integer" }, b: { type: "integer" } } },
  nested: {
    type: "object",
    properties: {
      user: {
        type: "object",
        properties: {
          name: { type: "string" },
          email: { type: "string", format: "email" },
          tags: { type: "array", items: { enum: ["x", "y"] } },
          address: { type: "object", properties: { city: { type: "string" }, zip: { type: "integer", minimum: 10000 } } },
        },
        required: ["name", "id"],
      },
      meta: { properties: { created: { type: "string", format: "date-time" } } },
      list: { type: "array", items: { type: "object", required: ["k"] } },
    },
    required: ["user"],
  },
};

const results = {};
const seenByScript = {};
for (const [key, schema] of Object.entries(schemas)) {
  const v = await agent("Generate " + key, { schema });
  results[key] = v;
  // The key order the script itself observes.
  seenByScript[key] = JSON.stringify(v);
}
export default { results, seenByScript };
