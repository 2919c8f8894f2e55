export const meta = { name: "parallel-max-agents", description: "parallel() with --max-parallel-agents 1: agents run one at a time" };

const r = await parallel(["a", "b", "c", "d"].map((x) => () => agent("serial " + x)));
export default r;
