import { sleep } from "workflow:extra";
export const meta = { name: 'compat-killed-parent', description: 'a child workflow, then killed in a sleep', phases: [{ title: 'Go' }] };
phase('Go');
const before = await agent('parent before');
const child = await workflow({ scriptPath: './smolwf_e_child.mjs' }, { item: 'beta' });
const again = await agent('parent before');
await sleep(60000);
const after = await agent('parent after');
export default { before, child, again, after };
