export const meta = { name: "parallel", description: "parallel(): concurrent thunks, a throwing thunk becomes null" };

phase("Fan out");
const r = await parallel([
  () => agent("branch one"),
  () => agent("branch two", { schema: { type: "integer", minimum: 2 } }),
  () => { throw new Error("thunk failed"); },
  async () => { const x = await agent("branch four"); return x.toUpperCase(); },
  () => 5,
  () => null,
  () => undefined,
  async () => { throw "string thrown"; },
  () => Promise.reject(new Error("rejected promise")),
  async () => ({ nested: await parallel([() => agent("inner a"), () => agent("inner b")]) }),
]);
const empty = await parallel([]);
log("parallel done", r.length);
export default { r, empty };
