export const meta = { name: "model-map", description: "--model-map aliases: plain, ?thinking, provider/model, percent-encoding, + in the query" };

// The debug provider reports the resolved model in agent_completed.data.model (see --events);
// the rewritten options (requestedModel, modelSelector, modelProvider, thinking) are in the step signatures.
const out = {};
for (const model of [
  "fast",          // plain alias
  "smart",         // alias with ?thinking=low
  "pm",            // alias with provider/model
  "enc",           // percent-encoded model part (kept) and query value (decoded)
  "plus",          // '+' in model part (kept) and in query value (a space)
  "both",          // provider from slash form and from the query agree
  "qprov",         // provider only in the query
  "empties",       // empty query pairs are skipped
  "encKey",        // percent-encoded query key
  "twice",         // alias given twice: the last one wins
  "colon",         // selector containing ':'
  "slashes",       // a/b/c: provider a, model id b/c
  "chain",         // alias to another alias name: no recursion
  "unmapped-model",            // no alias: used as is
  "direct/model-x",            // no alias, provider/model form
  "raw-model?thinking=high",   // no alias, with a query
]) {
  out[model] = await agent("model " + model, { model });
}
export default out;
