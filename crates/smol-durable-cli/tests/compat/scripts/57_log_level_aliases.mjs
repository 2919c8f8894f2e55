export const meta = { name: "log-level-aliases", description: "--log-level accepts aliases case-insensitively (WARNING)" };

phase("Aliases");
log("log line under --log-level WARNING");
export default await agent("log level alias");
