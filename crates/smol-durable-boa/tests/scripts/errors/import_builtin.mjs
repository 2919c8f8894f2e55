// expect: import of "fs" is not allowed in workflows: only "workflow:extra" and relative files inside the workflow's directory can be imported
// kind: import
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
await agent("never");
import fs from "fs";
export default fs;
