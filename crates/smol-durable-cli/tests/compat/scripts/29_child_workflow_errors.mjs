export const meta = { name: "child-workflow-errors", description: "Child workflow failures seen by the parent" };

const out = {};
try { out.thrown = await workflow({ scriptPath: "./lib/child_thrower.mjs" }, { x: 1 }); } catch (e) { out.thrown = "ERR " + e.message; }
try { out.badRef = await workflow({ path: "x" }); } catch (e) { out.badRef = "ERR " + e.message; }
try { out.numberRef = await workflow(42); } catch (e) { out.numberRef = "ERR " + e.message; }
out.parentContinues = await agent("parent still works");
export default out;
