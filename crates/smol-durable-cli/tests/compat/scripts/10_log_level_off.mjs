export const meta = { name: "log-level-off", description: "--log-level off does not silence [phase]/[log] lines" };

phase("Quiet?", { level: "off" });
log("still printed with --log-level off");
const r = await agent("agent under log-level off");
log("answer", r);
export default r;
