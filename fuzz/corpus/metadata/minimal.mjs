export const meta = { name: "x", description: "y", phases: [{ title: "a", model: "m" }] };
export default 1;
