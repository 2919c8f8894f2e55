// A first workflow: two agent calls around a durable sleep.
import { sleep } from "workflow:extra";

export const meta = {
  name: "hello",
  description: "Greets someone, waits a moment, and says goodbye",
  phases: [{ title: "greet" }, { title: "farewell" }],
};

phase("greet");
const greeting = await agent(`Say hello to ${args.name ?? "the world"}`);
log("greeted", args.name ?? "the world");
await sleep(500);
phase("farewell");
const [goodbye, joke] = await parallel([
  () => agent("Say goodbye"),
  () => agent("Tell a one-line joke"),
]);
export default { greeting, goodbye, joke, spent: budget.spent() };
