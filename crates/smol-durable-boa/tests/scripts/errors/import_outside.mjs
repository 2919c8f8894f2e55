// expect: resolves outside the workflow's directory
// kind: import
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
await agent("never");
import secret from "../child.mjs";
export default secret;
