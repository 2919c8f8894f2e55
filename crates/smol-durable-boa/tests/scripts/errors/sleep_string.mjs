// expect: sleep(ms) requires a finite non-negative number
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
await sleep("5");
export default 1;
