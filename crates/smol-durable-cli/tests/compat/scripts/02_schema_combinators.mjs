export const meta = { name: "schema-combinators", description: "Debug provider: const, enum, oneOf/anyOf, allOf merge, type arrays, inferred types, true schema" };

// Every schema here gets a value that also passes smol-wf's own validator.
const schemas = {
  constString: { const: "fixed" },
  constObject: { const: { b: [true, null], a: 1 } },
  constNull: { const: null },
  enumFirst: { enum: ["red", "green", "blue"] },
  enumNumber: { type: "integer", enum: [7, 8] },
  enumObject: { enum: [{ k: "v" }, 2] },
  enumBeforeOneOf: { enum: ["e"], oneOf: [{ type: "string" }] },
  oneOfFirst: { oneOf: [{ type: "boolean" }, { type: "string" }] },
  anyOfFirst: { anyOf: [{ type: "null" }, { type: "integer" }] },
  anyOfNested: { anyOf: [{ oneOf: [{ enum: ["deep"] }] }] },
  allOfMerge: { allOf: [
    { type: "object", properties: { a: { type: "string" }, b: { type: "integer" } } },
    { type: "object", properties: { c: { type: "null" } }, required: ["d"] },
  ] },
  allOfLaterKeyWins: { allOf: [{ properties: { b: { type: "integer" }, keep: { const: "first" } } }, { properties: { b: { const: 5 } } }] },
  allOfSingleString: { allOf: [{ type: "string", format: "date" }] },
  allOfNonObjectsLast: { allOf: [{ minimum: 1 }, { type: "integer", minimum: 2 }] },
  typeArray: { type: ["integer", "null"] },
  typeArrayNullFirst: { type: ["null", "string"] },
  typeArrayString: { type: ["string", "integer"], format: "email" },
  inferObjectFromProperties: { properties: { p: { type: "string" } } },
  inferObjectFromRequired: { required: ["r"] },
  inferObjectFromAdditional: { additionalProperties: { type: "string" } },
  inferArrayFromItems: { items: { type: "boolean" } },
  inferArrayFromPrefix: { prefixItems: [{ type: "integer" }, { const: "x" }] },
  inferNumberFromMinimum: { minimum: 3 },
  inferNumberFromMaximum: { maximum: 10 },
  inferNumberFromMultipleOf: { multipleOf: 3 },
  inferStringFromMinLength: { minLength: 2 },
  inferStringFromPattern: { pattern: "^d" },
  inferStringFromFormat: { format: "email" },
  emptySchemaIsObject: {},
  trueSchema: true,
  boolType: { type: "boolean" },
  nullType: { type: "null" },
  description_only: { description: "no type at all", title: "T" },
};

const results = {};
for (const [key, schema] of Object.entries(schemas)) {
  results[key] = await agent("Generate " + key, { schema });
}
export default results;
