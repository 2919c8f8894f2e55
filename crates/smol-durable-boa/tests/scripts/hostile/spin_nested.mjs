export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Spins on a huge counted loop (each loop is under the iteration limit; together they are not).
let n = 0;
for (;;) { for (let i = 0; i < 1000000; i++) { n += i; } }
export default "unreachable";
