export const meta = { name: "unknown-agent-provider", description: "--agent-provider with an unknown name fails before the run" };

export default await agent("never reached");
