export const meta = { name: "hostile", description: "a script that tries to take the host down" };
const m = await import("/etc/passwd");
export default m;
