export const meta = { name: "provider-validation", description: "Per-provider model validation that fails before any CLI is spawned" };

const out = {};
const tries = {
  codexThinking: { provider: "codex", model: "gpt-5?thinking=high" },
  codexModelProvider: { provider: "codex", model: "openai/gpt-5" },
  codexQueryProvider: { provider: "codex", model: "gpt-5?provider=openai" },
  claudeModelProvider: { provider: "claude-code", model: "anthropic/sonnet" },
  claudeQueryProvider: { provider: "claude-code", model: "sonnet?provider=anthropic" },
  opencodeNoProvider: { provider: "opencode", model: "gpt-5" },
  opencodeNoProviderThinking: { provider: "opencode", model: "gpt-5?thinking=low" },
  codexAliasThinking: { provider: "codex", model: "deep" },
  unknownProvider: { provider: "nope" },
  unknownProviderWithModel: { provider: "nope", model: "m" },
  debugAcceptsAnything: { provider: "debug", model: "a/b?thinking=x" },
  nonStringProviderIgnored: { provider: 5 },
};
for (const [k, options] of Object.entries(tries)) {
  try {
    out[k] = { ok: await agent("provider " + k, options) };
  } catch (e) {
    out[k] = { error: String(e && e.message) };
  }
}
export default out;
