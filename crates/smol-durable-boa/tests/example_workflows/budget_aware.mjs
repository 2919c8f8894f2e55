// Keeps asking while the budget allows, and reports what it spent.
export const meta = { name: "budget-aware", description: "Spends its allowance and stops" };

export default async function (args, ctx) {
  const answers = [];
  while (ctx.budget.remaining() >= (args.costPerCall ?? 4) && answers.length < 10) {
    answers.push(await ctx.agent(`idea ${answers.length + 1}`));
  }
  return { answers, spent: ctx.budget.spent(), left: ctx.budget.remaining() };
}
