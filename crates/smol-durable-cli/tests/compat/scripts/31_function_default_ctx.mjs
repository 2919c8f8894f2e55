import { sleep } from "workflow:extra";

export const meta = { name: "function-default-ctx", description: "export default async (args, ctx) => ... using ctx" };

export default async (input, ctx) => {
  const keys = Object.keys(ctx);
  ctx.phase("Ctx phase", { via: "ctx" });
  ctx.log("ctx log", input.topic);
  const a = await ctx.agent("ctx agent " + input.topic);
  const p = await ctx.parallel([() => ctx.agent("ctx parallel"), () => 2]);
  const pl = await ctx.pipeline([1], (x) => x + 1);
  await ctx.extra.sleep(1);
  return {
    keys,
    inputIsGlobalArgs: input === args,
    ctxArgsIsInput: ctx.args === input,
    ctxArgsJson: JSON.stringify(ctx.args),
    agentIsGlobal: ctx.agent === agent,
    extraSleepIsImport: ctx.extra.sleep === sleep,
    extraKeys: Object.keys(ctx.extra),
    budget: { total: ctx.budget.total, spent: ctx.budget.spent(), remaining: ctx.budget.remaining() },
    a,
    p,
    pl,
  };
};
