export const meta = { name: "model-map-errors", description: "Model selector errors, each caught from agent()" };

const out = {};
for (const model of [
  "noModel",       // ?thinking=low
  "emptyProvider", // /m
  "emptyModelId",  // p/
  "pairNoEquals",  // m?thinking
  "emptyValue",    // m?thinking=
  "emptyProviderValue", // m?provider=
  "unknownKey",    // m?color=red
  "emptyKey",      // m?=v
  "repeatedKey",   // m?thinking=low&thinking=high
  "conflict",      // p/m?provider=q
  "badEscape",     // m?thinking=%ZZ
  "doubleQuestion",// m??thinking=low
  "/direct-empty-provider",
  "direct?thinking",
]) {
  try {
    out[model] = { ok: await agent("model " + model, { model }) };
  } catch (e) {
    out[model] = { error: String(e && e.message) };
  }
}
export default out;
