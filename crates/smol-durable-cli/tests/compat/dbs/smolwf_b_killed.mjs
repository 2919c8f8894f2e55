import { sleep } from "workflow:extra";
export const meta = { name: 'compat-killed', description: 'two agents, then a long sleep (killed with SIGKILL during it)' };
const first = await agent('first call');
const second = await agent('second call', { tag: 'x' });
await sleep(60000);
const third = await agent('after the sleep');
export default { first, second, third };
