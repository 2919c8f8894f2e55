// Every global and the ctx a default function receives, each used once.
import extra, * as namespace from "workflow:extra";

export const meta = {
  name: "globals",
  description: "Touches every global a workflow sees",
  phases: [{ title: "gather", model: "fast" }],
};

export default async function (input, ctx) {
  phase("gather");
  log("gathering", { topic: input.topic });
  const [about, second] = await parallel([
    () => agent(`about ${args.topic}`),
    () => ctx.agent("second", { phase: "other" }),
  ]);
  const sums = await ctx.pipeline([1, 2], (prev, item) => prev + item);
  await SW.extra.sleep(1);
  await extra.sleep(1);
  await namespace.sleep(1);
  const child = await ctx.workflow({ scriptPath: "./child.mjs" }, { n: 3 });
  let frozen = "writable";
  try {
    ctx.args.topic = "changed";
  } catch (error) {
    frozen = error.message;
  }
  ctx.phase("report");
  ctx.log("done");
  return {
    about,
    second,
    sums,
    child: child.answer,
    frozen,
    spent: ctx.budget.spent(),
    left: budget.remaining(),
    sameArgs: ctx.args === args && input === args,
  };
}
