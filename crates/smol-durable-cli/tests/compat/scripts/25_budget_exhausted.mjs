export const meta = { name: "budget-exhausted", description: "More output tokens than --budget-allowance 12 allows" };

const out = [];
for (let i = 0; i < 4; i++) {
  out.push(await agent("call number " + i));
  log("spent", budget.spent(), "remaining", budget.remaining());
}
export default { out, spent: budget.spent(), remaining: budget.remaining(), total: budget.total };
