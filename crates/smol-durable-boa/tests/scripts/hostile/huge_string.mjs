export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Returns a 100 MB string.
export default "x".repeat(100 * 1024 * 1024);
