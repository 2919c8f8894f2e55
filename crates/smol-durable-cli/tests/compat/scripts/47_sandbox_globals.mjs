export const meta = { name: "sandbox-globals", description: "Determinism sandbox: which globals exist; Math.random throws" };

const out = {};
for (const n of ["Date", "eval", "Function", "setTimeout", "setInterval", "console", "process", "require", "fetch", "agent", "workflow", "parallel", "pipeline", "budget", "log", "phase", "args", "Promise", "JSON", "Math"]) {
  out[n] = typeof globalThis[n];
}
try {
  out.random = Math.random();
} catch (e) {
  out.random = "ERR " + e.message;
}
for (const name of ["agent", "args", "budget"]) {
  try {
    globalThis[name] = null;
    out["assign_" + name] = typeof globalThis[name];
  } catch (e) {
    out["assign_" + name] = "ERR " + e.message;
  }
}
export default out;
