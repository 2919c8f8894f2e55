// expect: cannot import
// kind: import
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
await agent("never");
import gone from "./lib/gone.mjs";
export default gone;
