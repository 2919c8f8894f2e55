import { sleep } from "workflow:extra";

export const meta = {
  name: "legacy-sd",
  description: "a run left unfinished by smol-durable 0.1.0",
  phases: [{ title: "Plan", model: "smart" }, { title: "Write" }],
};

phase("Plan");
const plan = await agent("plan the essay");
const outline = await agent("outline it", { model: "fast", key: "outline" });
phase("Write");
const drafts = await parallel([() => agent("draft A"), () => agent("draft B", { phase: "Plan" })]);
await sleep(5);
const child = await workflow({ scriptPath: "./child.mjs" }, { topic: "tea" });
const review = await agent(`review ${drafts.join(" / ")}`, {
  provider: "debug",
  schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] },
});
const final = await agent(`final ${review.ok}`);
export default { plan, outline, drafts, child, review, final };
