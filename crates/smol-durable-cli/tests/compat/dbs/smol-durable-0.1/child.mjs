export const meta = { name: "legacy-child", description: "a child run", phases: [{ title: "Research", model: "fast" }] };
phase("Research");
const notes = await agent(`notes on ${args.topic}`);
export default { notes };
