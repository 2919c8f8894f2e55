// expect: sleep(ms) requires a finite non-negative number
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
await sleep(-1);
export default 1;
