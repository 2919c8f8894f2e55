// Multi-phase research in the style of smol-workflows: plan each topic, then write it up.
export const meta = {
  name: "multi-phase",
  description: "Plans and writes a short note per topic",
  phases: [
    { title: "plan", detail: "outline each topic", model: "fast" },
    { title: "write", detail: "draft the notes" },
  ],
};

const notes = await pipeline(
  args.topics ?? ["tea", "coffee"],
  (topic) => agent(`outline ${topic}`, { phase: "plan" }),
  (outline, topic) => agent(`write about ${topic} from: ${outline}`, { phase: "write" }),
);
log("wrote", notes.length, "notes");
export default { notes };
