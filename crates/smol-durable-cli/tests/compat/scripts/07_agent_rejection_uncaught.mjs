export const meta = { name: "agent-rejection-uncaught", description: "An agent() rejection the script does not catch fails the run" };

const ok = await agent("This one works");
log("first answer:", ok);
const bad = await agent("This one cannot satisfy its schema", { schema: { type: "object", properties: { v: { anyOf: [{ type: "string" }], oneOf: [{ const: 42 }] } }, required: ["v"] } });
export default { ok, bad };
