export const meta = { name: "schema-strings-arrays", description: "Debug provider: string formats and arrays" };

const schemas = {
  plainString: { type: "string" },
  email: { type: "string", format: "email" },
  uri: { type: "string", format: "uri" },
  url: { type: "string", format: "url" },
  dateTime: { type: "string", format: "date-time" },
  date: { type: "string", format: "date" },
  time: { type: "string", format: "time" },
  uuid: { type: "string", format: "uuid" },
  hostname: { type: "string", format: "hostname" },
  patternMatching: { type: "string", pattern: "^debug" },
  maxLength: { type: "string", maxLength: 20 },
  arrayNoItems: { type: "array" },
  arrayItems: { type: "array", items: { type: "integer", minimum: 2 } },
  arrayItemsTrue: { type: "array", items: true },
  arrayPrefixItems: { type: "array", prefixItems: [{ type: "string" }, { type: "boolean" }, { const: 9 }] },
  arrayPrefixWinsOverItems: { type: "array", prefixItems: [{ type: "null" }], items: { type: "string" } },
  arrayNested: { type: "array", items: { type: "array", items: { type: "string", format: "date" } } },
  arrayOfObjects: { type: "array", items: { type: "object", properties: { id: { type: "integer" }, url: { type: "string", format: "uri" } } } },
  arrayMaxItems: { type: "array", maxItems: 3, items: { enum: ["only"] } },
};

const results = {};
for (const [key, schema] of Object.entries(schemas)) {
  results[key] = await agent("Generate " + key, { schema });
}
export default results;
