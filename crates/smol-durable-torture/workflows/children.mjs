// Two child workflows, one after the other and one alongside a call.
export const meta = { name: "children", description: "child workflows as durable steps" };

const one = await workflow({ scriptPath: "./child.mjs" }, { n: 1 });
const [two, own] = await parallel([
  () => workflow({ scriptPath: "./child.mjs" }, { n: 2 }),
  () => agent("parent's own call"),
]);
export default { one, two, own };
