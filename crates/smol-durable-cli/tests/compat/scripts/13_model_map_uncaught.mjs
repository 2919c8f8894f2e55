export const meta = { name: "model-map-uncaught", description: "An invalid model selector rejects agent(); uncaught it fails the run" };

phase("Resolve");
const r = await agent("uses a broken alias", { model: "broken" });
export default r;
