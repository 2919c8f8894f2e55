export const meta = { name: "named-workflow", description: "workflow(\"name\") resolved by meta.name from .claude/workflows/*.js under the cwd" };

const out = {};
out.named = await workflow("compat-named-child", { who: "parent" });
out.namedNoArgs = await workflow("compat-named-child");
try { out.missing = await workflow("no-such-workflow"); } catch (e) { out.missing = "ERR " + e.message; }
export default out;
