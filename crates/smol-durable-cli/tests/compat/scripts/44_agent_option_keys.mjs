export const meta = { name: "agent-option-keys", description: "key option, other unknown option keys, retry validation, odd option values" };

const out = {};
const tries = {
  key: { key: "my-key-1" },
  sameKeyOtherPrompt: { key: "my-key-1" },
  customKeys: { temperature: 0.2, tags: ["x"], nested: { a: null } },
  agentType: { agentType: "reviewer" },
  isolationNone: { isolation: "none" },
  retryValid: { retry: { maxAttempts: 2, backoffMs: 0 } },
  retryExtraKey: { retry: { maxAttempts: 1, extra: true } },
  retryZeroAttempts: { retry: { maxAttempts: 0 } },
  retryNegativeBackoff: { retry: { maxAttempts: 1, backoffMs: -1 } },
  retryNotObject: { retry: "yes" },
  undefinedValues: { model: undefined, phase: undefined },
  nullModel: { model: null },
  numberModel: { model: 5 },
  numberPhase: { phase: 3 },
  emptyObject: {},
};
for (const [k, options] of Object.entries(tries)) {
  try {
    out[k] = { ok: await agent("options " + k, options) };
  } catch (e) {
    out[k] = { error: String(e && e.message) };
  }
}
out.stringOptions = await agent("options given as a string", "string-options");
out.arrayOptions = await agent("options given as an array", [1, 2]);
out.emptyPrompt = await agent("");
out.repeatedPrompt = [await agent("same prompt twice"), await agent("same prompt twice")];
export default out;
