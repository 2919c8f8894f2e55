// Children run concurrently with a sleep, inside parallel.
import { sleep } from "workflow:extra";

export const meta = { name: "parent", description: "Fans out to two children" };

const [first, second, napped] = await parallel([
  () => workflow({ scriptPath: "./child.mjs" }, { n: 1 }),
  () => workflow({ scriptPath: "./child.mjs" }, { n: 2 }),
  () => sleep(20).then(() => "napped"),
]);
export default { first, second, napped };
