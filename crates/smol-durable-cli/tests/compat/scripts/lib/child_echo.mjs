export const meta = { name: "child-echo", description: "Child workflow that reports what it received as args" };

log("child sees", args);
phase("Child phase");
const r = await agent("child prompt " + JSON.stringify(args));
export default {
  childArgs: args,
  argsType: typeof args,
  argsIsNull: args === null,
  isArray: Array.isArray(args),
  keys: args && typeof args === "object" ? Object.keys(args) : null,
  r,
};
