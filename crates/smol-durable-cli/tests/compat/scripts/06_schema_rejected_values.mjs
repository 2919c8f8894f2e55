export const meta = { name: "schema-rejected-values", description: "Schemas whose debug value smol-wf's own validator rejects (caught per call)" };

// smol-wf generates a value, validates it, retries once, then rejects the agent() promise.
const schemas = {
  falseSchema: false,
  falseProperty: { type: "object", properties: { f: false } },
  constConflictsWithType: { type: "string", const: 12 },
  oneOfAndAnyOfDisagree: { anyOf: [{ type: "string" }], oneOf: [{ const: 42 }] },
  allOfConflictingKey: { allOf: [{ properties: { b: { type: "integer" } } }, { properties: { b: { type: "boolean" } } }] },
  allOfObjectThenString: { allOf: [{ type: "object", properties: { x: { type: "string" } } }, { type: "string" }] },
  minLength: { type: "string", minLength: 50 },
  patternMismatch: { type: "string", pattern: "^[0-9]+$" },
  maximumBelowZero: { type: "number", maximum: -5 },
  multipleOf: { type: "integer", multipleOf: 7, minimum: 1 },
  exclusiveMinimumAboveMinimumFloat: { type: "number", minimum: 1, exclusiveMinimum: 7.5 },
  hugeMinimum: { type: "number", minimum: 1e20 },
  minItems: { type: "array", minItems: 2, items: { type: "string" } },
  itemsFalse: { type: "array", items: false },
  unknownTypeName: { type: "widget" },
  requiredDuplicates: { type: "object", required: ["a", "a"] },
  itemsAsArray: { type: "array", items: [{ type: "string" }] },
  minProperties: { type: "object", minProperties: 1 },
};

const results = {};
for (const [key, schema] of Object.entries(schemas)) {
  try {
    results[key] = { ok: await agent("Generate " + key, { schema }) };
  } catch (e) {
    results[key] = { error: String(e && e.message) };
  }
}
export default results;
