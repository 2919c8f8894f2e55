export const meta = { name: "schema-numbers", description: "Debug provider: integer/number with minimum and exclusiveMinimum" };

const schemas = {
  integer: { type: "integer" },
  number: { type: "number" },
  intMinimum: { type: "integer", minimum: 5 },
  intMinimumFloat: { type: "integer", minimum: 2.5 },
  numMinimumFloat: { type: "number", minimum: 2.5 },
  numMinimumWhole: { type: "number", minimum: 4 },
  numMinimumWholeFloat: { type: "number", minimum: 4.0 },
  intExclusiveMinimum: { type: "integer", exclusiveMinimum: 3 },
  intExclusiveMinimumFloat: { type: "integer", exclusiveMinimum: 2.5 },
  numExclusiveMinimumOne: { type: "number", exclusiveMinimum: 1 },
  numExclusiveMinimumZero: { type: "number", exclusiveMinimum: 0 },
  numExclusiveMinimumNegative: { type: "number", exclusiveMinimum: -1 },
  numExclusiveBelowMinimum: { type: "number", minimum: 10, exclusiveMinimum: 2 },
  intExclusiveAboveMinimum: { type: "integer", minimum: 1, exclusiveMinimum: 7 },
  intNegativeMinimum: { type: "integer", minimum: -3 },
  numNegativeMinimumFloat: { type: "number", minimum: -3.5 },
  numMaximumAboveZero: { type: "number", maximum: 100 },
  intMultipleOfZeroOk: { type: "integer", multipleOf: 7 },
  numLargeMinimum: { type: "number", minimum: 1000000 },
};

const results = {};
const jsView = [];
for (const [key, schema] of Object.entries(schemas)) {
  const v = await agent("Generate " + key, { schema });
  results[key] = v;
  jsView.push(key + " -> " + JSON.stringify(v) + " (" + (Number.isInteger(v) ? "integer" : typeof v) + ")");
}
export default { results, jsView };
