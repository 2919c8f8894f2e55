export const meta = { name: "compat-named-child", description: "Named child workflow for the compat corpus (.claude/workflows, .js)" };

const r = await agent("named child says hi to " + (args && args.who));
export default { from: ".claude/workflows/compat-named-child.js", args, r };
