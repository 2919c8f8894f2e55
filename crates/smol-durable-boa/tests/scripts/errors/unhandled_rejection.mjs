// expect: scripted failure
export const meta = { name: "error", description: "Meets one error message" };
import { sleep } from "workflow:extra";
agent("fails");
await sleep(5);
export default 1;
