export const meta = { name: "unicode-ünï", description: "Ünïcødé — emoji 🎉, accents café, CJK 日本語, lone surrogates" };

phase("Fase ñ 🚀", { étape: "première" });
log("héllo wörld 🌍", "日本語");
const out = {};
out.emoji = await agent("Say 🎉 and 👍🏽 and 👨‍👩‍👧");
out.accents = await agent("Café, naïve, Ångström, façade");
out.cjk = await agent("日本語のプロンプト");
out.combining = await agent("e\u0301 vs \u00e9");
for (const [k, prompt] of [["loneHigh", "lone \uD83D surrogate"], ["loneLow", "low \uDC00 end"]]) {
  let p;
  try {
    p = agent(prompt);
  } catch (e) {
    out[k] = "threw synchronously: " + e.message;
    continue;
  }
  try {
    out[k] = await p;
  } catch (e) {
    out[k] = "rejected: " + e.message;
  }
}
log("log with lone \uD83D surrogate");
out.loneInResult = "x\uD83Dy";
out.nul = await agent("nul \u0000 char");
out.controls = await agent("tab\tnewline\ncr\r\u001b[0m bell\u0007");
out.schemaKeys = await agent("unicode schema", { schema: { type: "object", properties: { "ключ": { const: "значение ✓" }, "é": { type: "string" }, "🎉": { enum: ["🎊"] } } } });
out.keyOrder = { "ü": 1, "a": 2, "Z": 3, "é": 4, "日": 5, "🎉": 6, "_": 7 };
out.lengths = { emoji: "🎉".length, family: "👨‍👩‍👧".length };
export default out;
