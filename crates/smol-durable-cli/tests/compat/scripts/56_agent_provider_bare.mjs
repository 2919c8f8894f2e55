export const meta = { name: "agent-provider-bare", description: "--agent-provider without a value fails before the run" };

export default await agent("never reached");
