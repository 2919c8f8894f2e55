import { sleep } from "workflow:extra";

export const meta = { name: "sleep-uncaught", description: "sleep() with a negative duration, uncaught, fails the run" };

await sleep(1);
await sleep(-5);
export default "unreachable";
