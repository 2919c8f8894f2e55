export const meta = { name: "args-from-json", description: "--args-from-file .json with nested values, merged with --args-* options" };

let mutation;
try {
  args.added = 1;
  mutation = "allowed";
} catch (e) {
  mutation = "ERR " + e.message;
}
export default {
  args,
  keys: Object.keys(args),
  nestedKeys: Object.keys(args.nested),
  sameNested: args.nested === args.nested,
  sameDeep: args.nested.a === args.nested.a,
  deepValue: args.nested.a.deep[1],
  json: JSON.stringify(args),
  listLength: args.list.length,
  mutation,
};
