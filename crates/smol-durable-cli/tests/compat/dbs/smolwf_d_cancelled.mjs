import { sleep } from "workflow:extra";
export const meta = { name: 'compat-cancelled', description: 'one agent, then a sleep interrupted with SIGINT' };
const first = await agent('before the interrupt');
await sleep(60000);
const second = await agent('after the interrupt');
export default { first, second };
