export const meta = { name: "provider-default-codex", description: "--agent-provider codex: a thinking selector is refused before codex is spawned" };

phase("Think");
const r = await agent("think hard", { model: "gpt-5?thinking=high" });
export default r;
