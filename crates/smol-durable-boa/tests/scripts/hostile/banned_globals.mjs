export const meta = { name: "hostile", description: "a script that tries to take the host down" };
// Reaches for every global a workflow must not have; each attempt is recorded.
const attempts = {
  eval: () => eval("1 + 1"),
  Function: () => new Function("return 1")(),
  asyncFunction: () => (async () => {}).constructor("return 1")(),
  dateNow: () => Date.now(),
  newDate: () => new Date().getTime(),
  mathRandom: () => Math.random(),
  setTimeout: () => setTimeout(() => {}, 1),
  setInterval: () => setInterval(() => {}, 1),
  queueMicrotask: () => queueMicrotask(() => {}),
  console: () => console.log("x"),
  process: () => process.exit(1),
  require: () => require("fs"),
  fetch: () => fetch("http://127.0.0.1/"),
  WebAssembly: () => WebAssembly.compile(new Uint8Array()),
  SharedArrayBuffer: () => new SharedArrayBuffer(8),
  Atomics: () => Atomics.wait(new Int32Array(4), 0, 0, 1),
};
const reached = [];
for (const [name, attempt] of Object.entries(attempts)) {
  try {
    attempt();
    reached.push(name);
  } catch (e) {}
}
export default { reached };
