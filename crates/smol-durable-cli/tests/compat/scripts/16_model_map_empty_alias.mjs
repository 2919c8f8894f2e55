export const meta = { name: "model-map-cli-empty-alias", description: "An invalid --model-map option fails before the run" };

export default await agent("never reached", { model: "x" });
