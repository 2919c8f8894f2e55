// Every way of importing sleep from workflow:extra.
import { sleep } from "workflow:extra";
import extra from "workflow:extra";
import * as namespace from "workflow:extra";

export const meta = { name: "durable-sleep", description: "Sleeps three ways" };

await sleep(1);
await extra.sleep(2);
await namespace.sleep(3);
await SW.extra.sleep(4);
export default { slept: await sleep(0) === undefined };
