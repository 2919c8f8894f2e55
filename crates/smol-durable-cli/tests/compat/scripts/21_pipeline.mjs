export const meta = { name: "pipeline", description: "pipeline(): multi-stage, a throwing stage makes that item null" };

const r = await pipeline(
  ["alpha", "beta", "gamma"],
  (prev, item, index) => agent(`draft ${prev} #${index}`),
  async (prev, item, index) => {
    if (item === "beta") throw new Error("beta rejected");
    return { prev, item, index };
  },
  (prev, item, index) => agent(`review ${prev.item}`, { schema: { type: "object", properties: { ok: { type: "boolean" }, idx: { const: index } } } }),
);
const noStages = await pipeline([1, 2]);
const sync = await pipeline([1, 2, 3], (p) => p * 10, (p, item, i) => p + item + i);
const emptyItems = await pipeline([], (p) => p);
const firstStageThrows = await pipeline(["x"], () => { throw new Error("no"); }, () => "unreachable");
export default { r, noStages, sync, emptyItems, firstStageThrows };
