export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Sends a 100 MB prompt.
export default await agent("p".repeat(100 * 1024 * 1024));
