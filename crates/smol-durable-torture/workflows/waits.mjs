// Agent calls between waits for signals a separate process sends (and is killed while sending).
import { waitFor } from "workflow:extra";

export const meta = { name: "waits", description: "agent calls between waits for signals" };

const got = [];
for (let i = 0; i < 3; i++) {
  got.push(await agent(`${args.topic}: before tick ${i}`));
  got.push(await waitFor("tick", { description: `tick ${i}` }));
}
export default got;
