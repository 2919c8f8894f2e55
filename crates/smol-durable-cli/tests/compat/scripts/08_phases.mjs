export const meta = {
  name: "phases",
  description: "phase() with and without options; meta.phases model/provider defaults",
  phases: [
    { title: "Plan", model: "planner-model" },
    { title: "Build", detail: "builds things", model: "smart", provider: "debug" },
    { title: "Check" },
  ],
};

const out = {};
out.beforeAnyPhase = await agent("no phase yet");
phase("Plan");
out.plan = await agent("in plan");
out.planModelOverride = await agent("in plan with own model", { model: "other-model" });
phase("Build", { step: 2, tags: ["a", "b"], nested: { ok: true } });
out.build = await agent("in build (alias smart from meta)");
out.explicitPhase = await agent("explicit phase option", { phase: "Check" });
out.explicitPlanSchema = await agent("explicit plan phase with schema", { phase: "Plan", schema: { type: "string", format: "date" } });
phase("Not in meta");
out.unknownPhase = await agent("phase not listed in meta");
phase("Check", null);
phase("Check", "a string option");
phase("Check", 42);
phase("Check", [1, "two"]);
phase("Check", undefined);
out.check = await agent("check");
phase("Plan");
out.planAgain = await agent("back in plan");
export default out;
