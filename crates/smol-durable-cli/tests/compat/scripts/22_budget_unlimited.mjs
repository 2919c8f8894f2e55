export const meta = { name: "budget-unlimited", description: "budget without --budget-allowance: total null, remaining Infinity" };

const snap = (label) => ({ label, total: budget.total, spent: budget.spent(), remaining: budget.remaining(), remainingIsInfinity: budget.remaining() === Infinity });
const out = [snap("start")];
await agent("first call of the budget test");
out.push(snap("after one"));
await agent("second");
out.push(snap("after two"));
out.push({ typeofTotal: typeof budget.total, keys: Object.keys(budget), typeofSpent: typeof budget.spent });
export default out;
