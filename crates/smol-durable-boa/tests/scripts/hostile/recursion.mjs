export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Recurses without end.
function down(n) { return down(n + 1) + 1; }
export default down(0);
