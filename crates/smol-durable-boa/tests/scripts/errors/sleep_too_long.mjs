// expect: sleep(ms) is limited to 31536000000 ms, got 1000000000000000
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
await sleep(1e15);
export default 1;
