// Workflow globals, installed before the module runs. Host calls go through __sw_call, which
// returns a promise the engine resolves later; everything else is plain JavaScript.
(() => {
  "use strict";
  const rawCall = globalThis.__sw_call;
  const maxDepth = globalThis.__sw_max_depth;
  delete globalThis.__sw_max_depth;
  // Values cross to the host as JSON text. Their depth is checked without recursion first, so
  // a 100 000-deep value fails with a clear error instead of overflowing a native stack.
  const checkDepth = (value, what) => {
    if (value === null || typeof value !== "object") return;
    const stack = [[value, 1]];
    const seen = new Set();
    while (stack.length > 0) {
      const [item, depth] = stack.pop();
      if (item === null || typeof item !== "object" || seen.has(item)) continue;
      if (depth > maxDepth) {
        throw new RangeError(`${what} is nested deeper than ${maxDepth} levels`);
      }
      seen.add(item);
      for (const key of Object.keys(item)) stack.push([item[key], depth + 1]);
    }
  };
  const toJson = (value, what) => {
    checkDepth(value, what);
    return JSON.stringify(value);
  };
  // Cycles and BigInts fail here, synchronously, with JSON.stringify's own errors. Strings and
  // numbers travel as they are; objects as JSON text (null stays null).
  const json = (value, what) => (value === undefined || value === null ? null : toJson(value, what));
  const call = (kind, first, second) => rawCall(kind, first, second);
  const budgetNow = globalThis.__sw_budget;
  const maxSleepMs = globalThis.__sw_max_sleep_ms;
  delete globalThis.__sw_call;
  delete globalThis.__sw_budget;
  delete globalThis.__sw_max_sleep_ms;

  const readOnly = (value) => {
    if (value === null || typeof value !== "object") return value;
    const refuse = () => {
      throw new TypeError("Cannot modify workflow value");
    };
    return new Proxy(value, {
      get: (target, key) => readOnly(target[key]),
      set: refuse,
      defineProperty: refuse,
      deleteProperty: refuse,
      setPrototypeOf: refuse,
    });
  };

  const agent = (prompt, options) => call("agent", String(prompt), json(options, "agent() options"));
  const workflow = (ref, args) =>
    call("workflow", json(ref, "workflow() reference"), json(args, "workflow() arguments"));
  const log = (...values) => {
    call("log", toJson(values, "log() values"), null);
  };
  const phase = (name, options) => {
    call("phase", String(name), json(options, "phase() options"));
  };
  const sleep = (ms) => {
    if (typeof ms !== "number" || !Number.isFinite(ms)) {
      throw new TypeError(`sleep(ms) needs a finite number of milliseconds, got ${String(ms)}`);
    }
    if (ms < 0) {
      throw new RangeError(`sleep(ms) needs a non-negative number of milliseconds, got ${ms}`);
    }
    const rounded = Math.ceil(ms);
    if (rounded > maxSleepMs) {
      throw new RangeError(`sleep(ms) is limited to ${maxSleepMs} ms, got ${ms}`);
    }
    return call("sleep", rounded, null).then(() => undefined);
  };
  const settle = (thunk, ...params) => {
    try {
      return Promise.resolve(thunk(...params)).catch(() => null);
    } catch {
      return Promise.resolve(null);
    }
  };
  // All thunks start now, in order (so step identities are deterministic); a throwing one
  // yields null; the result never rejects.
  const parallel = (thunks) => Promise.all(Array.from(thunks, (thunk) => settle(thunk)));
  // Items run concurrently; each item's stages run in order with (previous, item, index); a
  // throwing stage makes that item null.
  const pipeline = (items, ...stages) =>
    Promise.all(
      Array.from(items, async (item, index) => {
        let previous = item;
        try {
          for (const stage of stages) {
            previous = await stage(previous, item, index);
          }
          return previous;
        } catch {
          return null;
        }
      }),
    );
  const budget = Object.freeze({
    get total() {
      return budgetNow().total;
    },
    spent: () => budgetNow().spent,
    remaining: () => {
      const now = budgetNow();
      return now.total === null ? Infinity : Math.max(0, now.total - now.spent);
    },
  });
  const extra = Object.freeze({ sleep });
  const args = readOnly(JSON.parse(globalThis.__sw_args));
  delete globalThis.__sw_args;

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: false, configurable: false, enumerable: false });
  define("args", args);
  define("agent", agent);
  define("workflow", workflow);
  define("parallel", parallel);
  define("pipeline", pipeline);
  define("budget", budget);
  define("log", log);
  define("phase", phase);
  define("SW", Object.freeze({ extra }));
  define("__sw_extra", extra);
  define("__sw_to_json", (value) => toJson(value, "the workflow's result"));
  define(
    "__sw_ctx",
    Object.freeze({ args, agent, parallel, pipeline, workflow, budget, log, phase, extra }),
  );

  // Determinism: no clock, no randomness, no weak references.
  const unavailable = (what, why) => () => {
    throw new TypeError(`${what} is not available in workflows: ${why}`);
  };
  const noDate = unavailable("Date", "workflows must replay identically; pass times in args");
  // A plain function, so `new Date()` reaches the message instead of "not a constructor".
  function Date() {
    noDate();
  }
  Date.now = noDate;
  Date.parse = noDate;
  Date.UTC = noDate;
  define("Date", Object.freeze(Date));
  Math.random = unavailable("Math.random", "workflows must replay identically; pass seeds in args");
  Object.freeze(Math);
  for (const name of ["WeakRef", "FinalizationRegistry", "Temporal"]) {
    delete globalThis[name];
  }
})();
