import { sleep } from "workflow:extra";

export const meta = { name: "sleep", description: "Durable sleep(ms) with small values, and its synchronous argument errors" };

const out = {};
const v = await sleep(5);
out.resolvedWith = typeof v;
await sleep(0);
await sleep(1.5);
out.afterSleeps = await agent("after sleeping");
const tries = { negative: -1, string: "10", nan: NaN, infinity: Infinity, nothing: undefined, nul: null, object: {}, overOneYear: 31536000001 };
for (const [k, val] of Object.entries(tries)) {
  let p;
  try {
    p = sleep(val);
  } catch (e) {
    out[k] = "threw synchronously: " + e.message;
    continue;
  }
  try {
    await p;
    out[k] = "resolved";
  } catch (e) {
    out[k] = "rejected: " + e.message;
  }
}
out.parallelSleeps = await parallel([() => sleep(3), () => agent("beside a sleep"), () => sleep(2).then(() => "slept")]);
export default out;
