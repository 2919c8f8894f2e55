// expect: sleep(ms) duration exceeds the maximum allowed delay
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
await sleep(1e15);
export default 1;
