export const meta = { name: "child-workflow", description: "workflow({scriptPath}) with object args, without args, with a string" };

phase("Parent");
const withArgs = await workflow({ scriptPath: "./lib/child_echo.mjs" }, { topic: "tea", n: [1, 2] });
const noArgs = await workflow({ scriptPath: "lib/child_echo.mjs" });
const stringArgs = await workflow({ scriptPath: "./lib/child_echo.mjs" }, "plain string");
const after = await agent("parent after children");
export default { withArgs, noArgs, stringArgs, after, parentArgs: args };
