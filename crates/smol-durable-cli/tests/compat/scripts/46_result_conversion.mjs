export const meta = { name: "result-conversion", description: "How the default export is converted to JSON (undefined, NaN, -0, functions, big numbers, key order)" };

export default {
  undefinedValue: undefined,
  nullValue: null,
  nan: NaN,
  infinity: -Infinity,
  negativeZero: -0,
  bigFloat: 1e21,
  bigInteger: 12345678901234567890,
  maxSafe: Number.MAX_SAFE_INTEGER,
  small: -1.5e-7,
  tenth: 0.1,
  integerFloat: 2.0,
  fn: () => 1,
  array: [1, undefined, () => 1, NaN, "s"],
  zKey: "last alphabetically",
  aKey: "first alphabetically",
  "10": "numeric key",
  "9": "numeric key",
  nested: { b: 1, a: { d: 2, c: 3 } },
  date: typeof Date,
};
