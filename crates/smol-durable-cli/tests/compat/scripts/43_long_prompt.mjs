export const meta = { name: "long-prompt", description: "agent_started promptPreview: first 200 characters, then …" };

const out = {};
out.exactly200 = (await agent("a".repeat(200))).length;
out.chars201 = (await agent("b".repeat(201))).length;
out.emoji205 = (await agent("🎉".repeat(205))).length;
out.mixed = (await agent("é".repeat(199) + "🎉🎉🎉")).slice(-6);
out.newlines = (await agent("line\n".repeat(60))).length;
out.big = (await agent("word ".repeat(4000))).length;
export default out;
