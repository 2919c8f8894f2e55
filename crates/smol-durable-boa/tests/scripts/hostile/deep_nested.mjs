export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Builds a 100 000-deep nested array, stringifies it, and returns it.
let a = [];
for (let i = 0; i < 100000; i++) a = [a];
let text;
try { text = JSON.stringify(a); } catch (e) { text = String(e); }
export default { text: text.slice(0, 80), a };
