// expect: SyntaxError: unexpected token ',', primary expression
// kind: syntax
// at: 7:11
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default {
  broken: ,
};
