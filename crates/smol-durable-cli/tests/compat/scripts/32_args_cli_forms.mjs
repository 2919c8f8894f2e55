export const meta = { name: "args-cli-forms", description: "--args-x v, --args-x=v, repeated names, bare flags" };

export default {
  args,
  keys: Object.keys(args),
  json: JSON.stringify(args),
  types: Object.fromEntries(Object.entries(args).map(([k, v]) => [k, Array.isArray(v) ? "array" : typeof v])),
};
