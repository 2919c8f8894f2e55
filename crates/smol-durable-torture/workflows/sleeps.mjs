// Calls around durable sleeps.
import { sleep } from "workflow:extra";

export const meta = { name: "sleeps", description: "agent calls around durable sleeps" };

const before = await agent("before sleeping");
await sleep(150);
const between = await agent(`between sleeps after ${before.length}`);
await sleep(80);
const after = await agent(`after sleeping after ${between.length}`);
export default { before, between, after };
