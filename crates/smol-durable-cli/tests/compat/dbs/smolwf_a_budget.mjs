// smol-wf 0.3.4 has no hard budget: agent() never rejects. This script stops itself the way
// smol-durable's engine does (before an agent call when nothing remains), with the same text.
export const meta = {
  name: 'compat-budget',
  description: 'phases with model defaults, per-call phase, model map; fails when the budget is spent',
  phases: [{ title: 'Plan', model: 'smart' }, { title: 'Build', model: 'fast' }],
};
function call(prompt, options) {
  if (budget.total !== null && budget.remaining() <= 0) {
    throw new Error(`budget exhausted: spent ${budget.spent()} of ${budget.total} output tokens`);
  }
  return agent(prompt, options);
}
phase('Plan');
const plan = await call('draft the plan');                       // phase Plan -> model smart
const review = await call('review the plan', { phase: 'Build' }); // per-call phase -> model fast
const notes = await call('write notes', { model: 'fast' });       // phase Plan, explicit model
log('spent after three calls', budget.spent());
phase('Build');
const build = await call('build it');                              // phase Build -> model fast
const check = await call('check it', { phase: 'Plan', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } });
export default { plan, review, notes, build, check };
