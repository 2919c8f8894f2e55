export const meta = { name: "model-map-cli-no-colon", description: "An invalid --model-map option fails before the run" };

export default await agent("never reached", { model: "x" });
