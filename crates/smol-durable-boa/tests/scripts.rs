//! JavaScript workflows run through the whole engine (memory store, scripted provider).
//! (Long, but one list of cases.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use smol_durable_boa::BoaEngine;
use smol_durable_core::{Engine, Error, MemoryStore, ScriptErrorKind, WorkflowSource};
use smol_durable_testkit::ScriptedProvider;

mod common;
use common::setup;

const META: &str = "export const meta = { name: \"test\", description: \"test\" };\n";

fn script(body: &str) -> String {
    format!("{META}{body}")
}

#[tokio::test]
async fn a_module_with_top_level_await_agents_and_sleep() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "hello.mjs",
            &script(
                "import { sleep } from \"workflow:extra\";\n\
                 const first = await agent(`hello ${args.name}`);\n\
                 await sleep(5);\n\
                 export default { first, second: await agent(\"bye\", { model: \"m\" }) };\n",
            ),
            json!({ "name": "Ada" }),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "first": "echo: hello Ada", "second": "echo: bye" })
    );
    assert_eq!(s.provider.call_count(), 2);
    assert_eq!(s.provider.calls()[1].request.model(), Some("m"));
}

#[tokio::test]
async fn a_default_function_gets_args_and_ctx() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "fn.mjs",
            &script(
                "export default async function (args, ctx) {\n\
                   const a = await ctx.agent(args.prompt);\n\
                   return { a, same: ctx.args === args || ctx.args.prompt === args.prompt };\n\
                 }\n",
            ),
            json!({ "prompt": "p" }),
        )
        .await
        .expect("run");
    assert_eq!(output.result, json!({ "a": "echo: p", "same": true }));
}

#[tokio::test]
async fn promise_all_runs_agents_concurrently() {
    let s = setup(ScriptedProvider::new("scripted").with_default_delay(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    let output = s
        .run(
            "all.mjs",
            &script(
                "export default await Promise.all([agent(\"a\"), agent(\"b\"), agent(\"c\")]);\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(output.result, json!(["echo: a", "echo: b", "echo: c"]));
    assert_eq!(s.provider.max_in_flight(), 3, "the three calls overlap");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn parallel_and_pipeline_never_reject() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "par.mjs",
            &script(
                "const p = await parallel([() => agent(\"x\"), () => { throw new Error(\"no\"); }, async () => 3]);\n\
                 const q = await pipeline([1, 2], (prev, item) => prev * 10, (prev, item, index) => { if (index === 1) throw new Error(\"bad\"); return prev + item; });\n\
                 export default { p, q };\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "p": ["echo: x", null, 3], "q": [11, null] })
    );
}

#[tokio::test]
async fn args_are_deeply_read_only() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "ro.mjs",
            &script(
                "const tries = [];\n\
                 for (const write of [() => { args.x = 1; }, () => { args.nested.y = 2; }, () => { delete args.nested; }]) {\n\
                   try { write(); tries.push(\"wrote\"); } catch (e) { tries.push(`${e.name}: ${e.message}`); }\n\
                 }\n\
                 export default { tries, y: args.nested.y };\n",
            ),
            json!({ "nested": { "y": 1 } }),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result["tries"],
        json!([
            "TypeError: Cannot modify workflow value",
            "TypeError: Cannot modify workflow value",
            "TypeError: Cannot modify workflow value"
        ])
    );
    assert_eq!(output.result["y"], json!(1));
}

#[tokio::test]
async fn nondeterminism_is_refused() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "det.mjs",
            &script(
                "const out = {};\n\
                 for (const [name, f] of Object.entries({ date: () => new Date(), now: () => Date.now(), random: () => Math.random(), eval: () => eval(\"1\"), fn: () => new Function(\"return 1\") })) {\n\
                   try { f(); out[name] = \"allowed\"; } catch (e) { out[name] = e.message; }\n\
                 }\n\
                 out.weak = typeof WeakRef;\n\
                 export default out;\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    let out = &output.result;
    for name in ["date", "now", "random", "eval", "fn"] {
        assert!(
            out[name].as_str().unwrap_or("").contains("not allowed")
                || out[name].as_str().unwrap_or("").contains("not available"),
            "{name}: {out}"
        );
    }
    assert_eq!(out["weak"], json!("undefined"));
}

#[tokio::test]
async fn sleep_arguments_are_checked_synchronously() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "sleep.mjs",
            &script(
                "import { sleep } from \"workflow:extra\";\n\
                 const out = [];\n\
                 for (const ms of [\"5\", -1, NaN, Infinity, 1e15]) { try { sleep(ms); out.push(\"ok\"); } catch (e) { out.push(e.message); } }\n\
                 export default out;\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    // smol-wf's messages: one for anything but a finite non-negative number, one for a delay
    // over a year.
    let invalid = json!("sleep(ms) requires a finite non-negative number");
    assert_eq!(
        output.result,
        json!([
            invalid,
            invalid,
            invalid,
            invalid,
            "sleep(ms) duration exceeds the maximum allowed delay"
        ])
    );
}

#[tokio::test]
async fn only_workflow_extra_and_relative_files_can_be_imported() {
    let s = setup(ScriptedProvider::new("scripted"));
    s.write(
        "flows/lib/helper.mjs",
        "export const twice = (x) => x * 2;\n",
    );
    let output = s
        .run(
            "flows/main.mjs",
            &script("import { twice } from \"./lib/helper.mjs\";\nexport default twice(21);\n"),
            json!({}),
        )
        .await
        .expect("relative import");
    assert_eq!(output.result, json!(42));
    for (name, import) in [
        ("fs.mjs", "fs"),
        ("up.mjs", "../../etc/passwd"),
        ("abs.mjs", "/etc/passwd"),
    ] {
        let error = s
            .run(
                &format!("flows/{name}"),
                &script(&format!(
                    "await agent(\"never\");\nimport x from \"{import}\";\nexport default x;\n"
                )),
                json!({}),
            )
            .await
            .expect_err(import);
        assert!(
            error.to_string().contains("import") || error.to_string().contains("cannot"),
            "{import}: {error}"
        );
    }
    assert_eq!(
        s.provider.calls_for("never"),
        0,
        "refused before the script runs"
    );
}

#[tokio::test]
async fn budget_phase_and_log_reach_the_engine() {
    let s =
        setup(ScriptedProvider::new("scripted").with_usage(smol_durable_core::Usage::tokens(1, 3)));
    let source = s.write(
        "budget.mjs",
        &script(
            "phase(\"plan\");\nlog(\"starting\", { n: 1 });\n\
             const before = budget.remaining();\nawait agent(\"a\");\n\
             export default { before, spent: budget.spent(), remaining: budget.remaining(), total: budget.total };\n",
        ),
    );
    let request = smol_durable_core::RunRequest::new(source, json!({})).budget_total(10);
    let output = s
        .engine
        .start(request)
        .await
        .expect("start")
        .join()
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "before": 10, "spent": 3, "remaining": 7, "total": 10 })
    );
    assert_eq!(
        s.provider.calls()[0].request.context.phase.as_deref(),
        Some("plan")
    );
    let events = s
        .engine
        .events(&output.run_id, 0, 100)
        .await
        .expect("events");
    assert!(events.iter().any(|e| e.event_type == "workflow.log"
        && e.payload["data"] == json!({ "message": "starting {\"n\":1}" })));
    assert!(events.iter().any(
        |e| e.event_type == "workflow.phase" && e.payload["data"] == json!({ "name": "plan" })
    ));
}

#[tokio::test]
async fn a_resumed_script_replays_completed_agents() {
    let s = setup(ScriptedProvider::new("scripted"));
    let failing = script("const a = await agent(\"one\");\nconst b = await agent(\"two\");\nthrow new Error(\"after two\");\nexport default 0;\n");
    s.run("replay.mjs", &failing, json!({}))
        .await
        .expect_err("first attempt fails");
    let fixed = script("const a = await agent(\"one\");\nconst b = await agent(\"two\");\nexport default [a, b, await agent(\"three\")];\n");
    s.write("replay.mjs", &fixed);
    let output = s.resume_newest().await.expect("resumed");
    assert_eq!(
        output.result,
        json!(["echo: one", "echo: two", "echo: three"])
    );
    for prompt in ["one", "two", "three"] {
        assert_eq!(s.provider.calls_for(prompt), 1, "{prompt} was called once");
    }
}

#[tokio::test]
async fn runaway_recursion_and_deep_values_fail_the_run_not_the_host() {
    let s = setup(ScriptedProvider::new("scripted"));
    let error = s
        .run(
            "recurse.mjs",
            &script("function f(n) { return f(n + 1) + 1; }\nexport default f(0);\n"),
            json!({}),
        )
        .await
        .expect_err("recursion");
    match &error {
        Error::Script(script) => assert_eq!(script.kind(), ScriptErrorKind::Limit, "{error}"),
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert!(error.to_string().contains("recursion limit"), "{error}");
    let error = s
        .run(
            "deep.mjs",
            &script("let a = [];\nfor (let i = 0; i < 100000; i++) a = [a];\nexport default a;\n"),
            json!({}),
        )
        .await
        .expect_err("too deep");
    assert_eq!(
        error.to_string(),
        "the workflow's result cannot be converted to JSON: RangeError: the workflow's result is nested deeper than 100 levels"
    );
    let error = s
        .run(
            "deep-arg.mjs",
            &script("let a = {};\nfor (let i = 0; i < 100000; i++) a = { a };\nexport default await agent(\"x\", { a });\n"),
            json!({}),
        )
        .await
        .expect_err("too deep an argument");
    assert!(matches!(error, Error::Script(_)), "{error:?}");
    // The engine still serves runs afterwards.
    let output = s
        .run("fine.mjs", &script("export default 1;\n"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!(1));
}

#[tokio::test]
async fn no_timers_console_process_or_require() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "globals.mjs",
            &script(
                "export default [typeof setTimeout, typeof setInterval, typeof console, typeof process, typeof require, typeof fetch, typeof Temporal, typeof FinalizationRegistry, typeof Atomics, typeof SharedArrayBuffer];\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(output.result, Value::Array(vec![json!("undefined"); 10]));
}

#[tokio::test]
async fn globals_cannot_be_replaced() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "replace.mjs",
            &script(
                "const out = [];\n\
                 for (const name of [\"agent\", \"args\", \"budget\", \"SW\"]) {\n\
                   try { globalThis[name] = 1; out.push(\"replaced\"); } catch (e) { out.push(e.name); }\n\
                 }\n\
                 export default out;\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!(["TypeError", "TypeError", "TypeError", "TypeError"])
    );
}

#[tokio::test]
async fn a_module_whose_only_suspension_is_for_await_still_completes() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "forawait.mjs",
            &script("const out = [];\nfor await (const x of [agent(\"a\"), agent(\"b\")]) out.push(x);\nexport default out;\n"),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(output.result, json!(["echo: a", "echo: b"]));
}

#[tokio::test]
async fn an_endless_loop_hits_the_loop_limit() {
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new().loop_iteration_limit(100_000)))
        .provider(provider)
        .build()
        .expect("engine");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("spin.mjs");
    std::fs::write(
        &path,
        script("let n = 0;\nwhile (true) { n++; }\nexport default n;\n"),
    )
    .expect("write");
    let source = WorkflowSource::from_file(&path).expect("source");
    let error = tokio::time::timeout(Duration::from_secs(20), engine.run(source, json!({})))
        .await
        .expect("no hang")
        .expect_err("loop limit");
    match error.error() {
        Error::Script(script) => assert_eq!(script.kind(), ScriptErrorKind::Limit, "{error}"),
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[tokio::test]
async fn import_cycles_complete_and_shared_modules_run_once() {
    let s = setup(ScriptedProvider::new("scripted"));
    s.write(
        "cycle/a.mjs",
        "import { fromMain } from \"./main.mjs\";\nexport const a = () => `a+${fromMain()}`;\n",
    );
    let output = s
        .run(
            "cycle/main.mjs",
            &script("import { a } from \"./a.mjs\";\nexport function fromMain() { return \"main\"; }\nexport default { a: a() };\n"),
            json!({}),
        )
        .await
        .expect("a cycle through the root module completes");
    assert_eq!(output.result, json!({ "a": "a+main" }));
    s.write(
        "shared/shared.mjs",
        "export const shared = await agent(\"shared\");\n",
    );
    s.write(
        "shared/a.mjs",
        "import { shared } from \"./shared.mjs\";\nexport const a = () => `a+${shared}`;\n",
    );
    let output = s
        .run(
            "shared/main.mjs",
            &script("import { shared } from \"./shared.mjs\";\nimport { a } from \"./a.mjs\";\nexport default { shared, a: a() };\n"),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "shared": "echo: shared", "a": "a+echo: shared" })
    );
    assert_eq!(
        s.provider.calls_for("shared"),
        1,
        "a module imported twice runs once"
    );
}

#[tokio::test]
async fn read_only_args_cannot_be_reached_through_descriptors() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "descriptors.mjs",
            &script(
                "const out = [];\n\
                 for (const write of [\n\
                   () => { Object.getOwnPropertyDescriptor(args, \"list\").value.push(3); },\n\
                   () => { Object.getOwnPropertyDescriptors(args).list.value.push(4); },\n\
                   () => { Object.preventExtensions(args); },\n\
                 ]) { try { write(); out.push(\"wrote\"); } catch (e) { out.push(e.name); } }\n\
                 export default { out, list: args.list };\n",
            ),
            json!({ "list": [1, 2] }),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "out": ["TypeError", "TypeError", "TypeError"], "list": [1, 2] })
    );
}

#[tokio::test]
async fn json_inside_scripts_is_depth_limited_and_strings_stay_well_formed() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = s
        .run(
            "json.mjs",
            &script(
                "const out = [];\n\
                 try { JSON.parse(\"[\".repeat(100000) + \"]\".repeat(100000)); out.push(\"parsed\"); } catch (e) { out.push(e.name); }\n\
                 let deep = 0; for (let i = 0; i < 20000; i++) deep = [deep];\n\
                 try { JSON.stringify({ toJSON: () => deep }); out.push(\"stringified\"); } catch (e) { out.push(e.name); }\n\
                 out.push(JSON.parse(JSON.stringify({ ok: [1, { two: 2 }] })).ok[1].two);\n\
                 log(\"half an emoji\", \"\\u{1F600}\".slice(0, 1));\n\
                 export default { out, half: \"\\u{1F600}\".slice(0, 1) };\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "out": ["RangeError", "RangeError", 2], "half": "\u{FFFD}" })
    );
}

#[tokio::test]
async fn an_unhandled_rejection_fails_the_run() {
    let s = setup(ScriptedProvider::new("scripted").fail_first(
        "fails",
        1,
        smol_durable_core::ProviderErrorKind::Terminal,
        None,
    ));
    let error = s
        .run(
            "unhandled.mjs",
            &script("import { sleep } from \"workflow:extra\";\nagent(\"fails\");\nawait sleep(5);\nexport default 1;\n"),
            json!({}),
        )
        .await
        .expect_err("unhandled");
    assert!(error.to_string().contains("scripted failure"), "{error}");
    // Handled later in the same turn is handled.
    let output = s
        .run(
            "handled.mjs",
            &script("const p = agent(\"ok\");\nconst value = await p.catch(() => null);\nexport default value;\n"),
            json!({}),
        )
        .await
        .expect("handled");
    assert_eq!(output.result, json!("echo: ok"));
}

#[tokio::test]
async fn phase_inside_a_parallel_thunk_or_pipeline_item_stays_in_it() {
    let s = setup(ScriptedProvider::new("scripted").with_default_delay(Duration::from_millis(20)));
    let output = s
        .run(
            "branches.mjs",
            &script(
                "phase('Top');\n\
                 await parallel([\n\
                   async () => { phase('A'); await agent('a1'); await agent('a2'); },\n\
                   async () => { await agent('b1'); phase('B'); await agent('b2'); },\n\
                 ]);\n\
                 await pipeline([1, 2], async (x) => { phase('P' + x); return agent('p' + x); }, (x, item) => agent('q' + item));\n\
                 export default await agent('after');\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(output.result, json!("echo: after"));
    let phases: std::collections::BTreeMap<String, Value> = s
        .provider
        .calls()
        .into_iter()
        .map(|call| {
            (
                call.request.prompt.clone(),
                call.request.options["phase"].clone(),
            )
        })
        .collect();
    let expected: std::collections::BTreeMap<String, Value> = [
        ("a1", "A"),
        ("a2", "A"),
        ("b1", "Top"),
        ("b2", "B"),
        ("p1", "P1"),
        ("p2", "P2"),
        ("q1", "P1"),
        ("q2", "P2"),
        ("after", "Top"),
    ]
    .into_iter()
    .map(|(prompt, phase)| (prompt.to_owned(), json!(phase)))
    .collect();
    assert_eq!(
        phases, expected,
        "no branch's phase leaks into another, or back out"
    );
}

#[tokio::test]
async fn a_keyed_call_replays_when_its_prompt_changes() {
    let s = setup(ScriptedProvider::new("scripted"));
    let first = script(
        "const a = await agent('summarize the draft', { key: 'summary' });\n\
         const b = await agent('review it');\n\
         throw new Error('stop after ' + a);\nexport default 0;\n",
    );
    s.run("keyed.mjs", &first, json!({}))
        .await
        .expect_err("stops");
    let edited = script(
        "const a = await agent('summarize the draft in one line', { key: 'summary' });\n\
         const b = await agent('review it, strictly');\n\
         export default [a, b];\n",
    );
    s.write("keyed.mjs", &edited);
    let output = s.resume_newest().await.expect("resumed");
    assert_eq!(
        output.result,
        json!(["echo: summarize the draft", "echo: review it, strictly"]),
        "the keyed call replays its stored answer; the unkeyed edited call runs"
    );
    assert_eq!(s.provider.calls_for("summarize the draft in one line"), 0);
    assert_eq!(s.provider.calls_for("review it, strictly"), 1);
}

#[tokio::test]
async fn an_error_raised_by_the_engine_s_own_javascript_points_at_the_user_s_line() {
    let s = setup(ScriptedProvider::new("scripted"));
    let error = s
        .run(
            "where.mjs",
            &script("import { sleep } from 'workflow:extra';\nfunction nap() { return sleep(-5); }\nawait nap();\nexport default 1;\n"),
            json!({}),
        )
        .await
        .expect_err("fails");
    let Error::Script(script_error) = &error else {
        panic!("{error}");
    };
    assert_eq!(
        script_error.message(),
        "TypeError: sleep(ms) requires a finite non-negative number"
    );
    let location = script_error.location().expect("a location");
    // Line 3 (after the `meta` line and the import) calls `sleep`; never a line of the engine.
    assert!(location.ends_with("where.mjs:3:30"), "{location}");
}

#[tokio::test]
async fn named_workflows_are_found_in_the_project_s_workflow_directories() {
    let s = setup(ScriptedProvider::new("scripted"));
    // The project root holds .git; the workflow runs from a directory below it.
    std::fs::create_dir_all(s.dir.path().join(".git")).expect("repo");
    s.write(
        ".agents/workflows/greeter.mjs",
        "export const meta = { name: 'greeter', description: 'by file name' };\nexport default await agent('hi ' + args.who);\n",
    );
    s.write(
        ".claude/workflows/other-file.js",
        "export const meta = { name: 'by-meta', description: 'by meta.name' };\nexport default 'found by meta';\n",
    );
    let output = s
        .run(
            "flows/deep/main.mjs",
            &script(
                "const a = await workflow('greeter', { who: 'Ada' });\n\
                 const b = await workflow('by-meta');\n\
                 let c;\n\
                 try { c = await workflow('missing'); } catch (e) { c = e.message; }\n\
                 export default { a, b, c };\n",
            ),
            json!({}),
        )
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "a": "echo: hi Ada", "b": "found by meta", "c": "Unknown workflow: missing" })
    );
}
