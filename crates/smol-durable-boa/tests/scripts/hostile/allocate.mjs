export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Allocates without bound: 1 MiB strings, kept alive.
const kept = [];
for (let i = 0; ; i++) kept.push("x".repeat(1024 * 1024) + i);
export default "unreachable";
