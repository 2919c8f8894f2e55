// Workflow globals, installed before the module runs. Host calls go through __sw_call, which
// returns a promise the engine resolves later; everything else is plain JavaScript.
(() => {
  "use strict";
  const rawCall = globalThis.__sw_call;
  const maxDepth = globalThis.__sw_max_depth;
  delete globalThis.__sw_max_depth;
  // Values cross to the host as JSON text. Their depth is checked without recursion first, so
  // a 100 000-deep value fails with a clear error instead of overflowing a native stack.
  const nativeStringify = JSON.stringify;
  const nativeParse = JSON.parse;
  // JSON.stringify with a depth limit (boa's own recursion has none) and well-formed strings
  // (a lone surrogate would not survive the trip to the host). The replacer sees values after
  // toJSON, so nothing can smuggle a deeper value past it.
  const stringify = (value, replacer, space, limit, what) => {
    const depths = new WeakMap();
    const allowed = Array.isArray(replacer) ? new Set(replacer.map(String)) : null;
    return nativeStringify(
      value,
      function (key, item) {
        if (allowed !== null && key !== "" && !Array.isArray(this) && !allowed.has(key)) {
          return undefined;
        }
        let result = typeof replacer === "function" ? replacer.call(this, key, item) : item;
        if (typeof result === "string") return result.toWellFormed();
        if (result !== null && typeof result === "object") {
          const depth = (depths.get(this) ?? 0) + 1;
          if (depth > limit) {
            throw new RangeError(`${what} is nested deeper than ${limit} levels`);
          }
          depths.set(result, depth);
        }
        return result;
      },
      space,
    );
  };
  // JSON.parse with the same limit, checked without recursion before boa's parser runs.
  const parse = (text, reviver) => {
    const source = String(text);
    let depth = 0;
    let inString = false;
    for (let i = 0; i < source.length; i++) {
      const c = source[i];
      if (inString) {
        if (c === "\\") i++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === "[" || c === "{") {
        if (++depth > 10000) throw new RangeError("JSON.parse: the text is nested deeper than 10000 levels");
      } else if (c === "]" || c === "}") depth--;
    }
    return nativeParse(source, reviver);
  };
  JSON.stringify = (value, replacer, space) =>
    stringify(value, replacer, space, 10000, "JSON.stringify: the value");
  JSON.parse = parse;
  Object.freeze(JSON);
  const toJson = (value, what) => stringify(value, undefined, undefined, maxDepth, what);
  // Cycles and BigInts fail here, synchronously, with JSON.stringify's own errors. Strings and
  // numbers travel as they are; objects as JSON text (null stays null).
  const json = (value, what) => (value === undefined || value === null ? null : toJson(value, what));
  const call = (kind, first, second) => rawCall(kind, first, second);
  const forkBranch = globalThis.__sw_fork_branch;
  const enterBranch = globalThis.__sw_enter_branch;
  delete globalThis.__sw_fork_branch;
  delete globalThis.__sw_enter_branch;
  // Runs `fn` in a new branch that starts with the current phase: `phase()` inside it, and the
  // agent calls after it, stay in it, across awaits (the host carries the branch with each job).
  const inBranch = (fn) => {
    const previous = enterBranch(forkBranch());
    try {
      return fn();
    } finally {
      enterBranch(previous);
    }
  };
  const budgetNow = globalThis.__sw_budget;
  const maxSleepMs = globalThis.__sw_max_sleep_ms;
  const runId = globalThis.__sw_run_id;
  delete globalThis.__sw_call;
  delete globalThis.__sw_budget;
  delete globalThis.__sw_max_sleep_ms;
  delete globalThis.__sw_run_id;

  // One proxy per object, so `args.x === args.x` holds as it does for plain objects.
  const proxies = new WeakMap();
  const readOnly = (value) => {
    if (value === null || typeof value !== "object") return value;
    const known = proxies.get(value);
    if (known !== undefined) return known;
    const refuse = () => {
      throw new TypeError("Cannot modify workflow value");
    };
    const proxy = new Proxy(value, {
      get: (target, key) => readOnly(target[key]),
      getOwnPropertyDescriptor: (target, key) => {
        const descriptor = Reflect.getOwnPropertyDescriptor(target, key);
        if (descriptor && "value" in descriptor) descriptor.value = readOnly(descriptor.value);
        return descriptor;
      },
      set: refuse,
      defineProperty: refuse,
      deleteProperty: refuse,
      setPrototypeOf: refuse,
      preventExtensions: refuse,
    });
    proxies.set(value, proxy);
    return proxy;
  };

  const agent = (prompt, options) => {
    if (typeof prompt !== "string") {
      const got = prompt === null ? "null" : typeof prompt;
      return Promise.reject(new TypeError(`agent(prompt, options) needs a string prompt, got ${got}`));
    }
    return call("agent", prompt, json(options, "agent() options"));
  };
  const workflow = (ref, args) =>
    call("workflow", json(ref, "workflow() reference"), json(args, "workflow() arguments"));
  // smol-wf's log text: strings as they are, other values as JSON (`undefined` and non-finite
  // numbers as null, a function as {}), joined by spaces. Top-level primitives are formatted
  // here so numbers read as JavaScript writes them (1e+21).
  const logPart = (value) => {
    if (typeof value === "string") return value;
    if (typeof value === "function") return {};
    if (value !== null && typeof value === "object") return value;
    try {
      return nativeStringify(value) ?? "null";
    } catch {
      return String(value);
    }
  };
  const log = (...values) => {
    call("log", toJson(values.map(logPart), "log() values"), null);
  };
  // `phase(name, undefined)` has options (null), as in smol-wf; `phase(name)` has none.
  const phase = (name, ...rest) => {
    const options = rest.length > 0 ? (json(rest[0], "phase() options") ?? "null") : undefined;
    call("phase", String(name), options);
  };
  // smol-wf's messages, which scripts may compare.
  const sleep = (ms) => {
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
      throw new TypeError("sleep(ms) requires a finite non-negative number");
    }
    const rounded = Math.ceil(ms);
    if (rounded > maxSleepMs) {
      throw new RangeError("sleep(ms) duration exceeds the maximum allowed delay");
    }
    return call("sleep", rounded, null).then(() => undefined);
  };
  // The host checks these calls' arguments at once and hands a bad one back, to be thrown here,
  // in the script's own frame.
  const checkedCall = (kind, first, second) => {
    const answer = call(kind, first, second);
    if (answer !== null && typeof answer === "object" && typeof answer.argumentError === "string") {
      throw new (answer.range ? RangeError : TypeError)(answer.argumentError);
    }
    return answer;
  };
  // Names and options are checked by the host at the call (bad ones throw there). What JSON
  // would lose is kept for it: an own `default` property that is undefined still counts, and
  // a non-finite time is sent as text (JSON would make it null: "no timeout").
  const waitCall = (kind, names, options) => {
    let checked = options;
    if (checked !== null && typeof checked === "object" && !Array.isArray(checked)) {
      checked = { ...checked };
      if (Object.prototype.hasOwnProperty.call(checked, "default") && checked.default === undefined) {
        checked.default = null;
      }
      for (const key of ["timeoutMs", "deadline"]) {
        if (typeof checked[key] === "number" && !Number.isFinite(checked[key])) {
          checked[key] = String(checked[key]);
        }
      }
    }
    return checkedCall(kind, toJson(names, `${kind}() names`), json(checked, `${kind}() options`));
  };
  const waitFor = (name, options) => waitCall("waitFor", [name], options);
  const waitForAny = (names, options) => {
    if (!Array.isArray(names)) {
      throw new TypeError("waitForAny(names, options) needs an array of signal names");
    }
    return waitCall("waitForAny", names, options);
  };
  const signal = (targetRunId, name, payload) => {
    if (typeof targetRunId !== "string" || targetRunId === "") {
      throw new TypeError("signal(runId, name, payload) needs a run id string");
    }
    if (typeof name !== "string") {
      throw new TypeError("signal(runId, name, payload) needs a signal name string");
    }
    if (typeof payload === "function" || typeof payload === "symbol") {
      throw new TypeError(`signal() payload must be JSON, got a ${typeof payload}`);
    }
    return checkedCall("signal", toJson([targetRunId, name], "signal()"), json(payload, "signal() payload"));
  };
  const settle = (thunk) =>
    inBranch(() => {
      try {
        return Promise.resolve(thunk()).catch(() => null);
      } catch {
        return Promise.resolve(null);
      }
    });
  // All thunks start now, in order (so step identities are deterministic), each in a branch of
  // its own; a throwing one yields null; the result never rejects.
  const parallel = (thunks) => Promise.all(Array.from(thunks, (thunk) => settle(thunk)));
  // Items run concurrently, each in a branch of its own; each item's stages run in order with
  // (previous, item, index); a throwing stage makes that item null.
  const pipeline = (items, ...stages) =>
    Promise.all(
      Array.from(items, (item, index) =>
        inBranch(async () => {
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
      ),
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
  const extra = Object.freeze({ sleep, waitFor, waitForAny, signal, runId });
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
    Object.freeze({ args, agent, parallel, pipeline, workflow, budget, log, phase, extra, runId }),
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
  // Atomics.waitAsync is a wall-clock timer; shared memory has no use without threads.
  for (const name of ["WeakRef", "FinalizationRegistry", "Temporal", "Atomics", "SharedArrayBuffer"]) {
    delete globalThis[name];
  }
})();
