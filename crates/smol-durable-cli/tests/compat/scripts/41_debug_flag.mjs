export const meta = { name: "debug-flag", description: "--debug adds dimmed [debug] lines to stderr; stdout unchanged" };

phase("Debugging");
log("a log line among debug lines");
export default await agent("debug flag prompt");
