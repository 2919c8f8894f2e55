export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Spins forever without awaiting anything.
while (true) {}
export default "unreachable";
