export const meta = { name: "log-level-invalid", description: "An invalid --log-level fails before the run" };

export default await agent("never reached");
