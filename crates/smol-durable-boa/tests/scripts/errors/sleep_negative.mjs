// expect: sleep(ms) needs a non-negative number of milliseconds, got -1
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
await sleep(-1);
export default 1;
