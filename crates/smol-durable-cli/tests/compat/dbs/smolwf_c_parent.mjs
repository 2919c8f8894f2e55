import { sleep } from "workflow:extra";
export const meta = { name: 'compat-parent', description: 'a child workflow and a sleep, completed', phases: [{ title: 'Go' }] };
phase('Go');
const before = await agent('parent before');
const child = await workflow({ scriptPath: './smolwf_c_child.mjs' }, { item: 'alpha' });
await sleep(100);
const after = await agent('parent after');
export default { before, child, after };
