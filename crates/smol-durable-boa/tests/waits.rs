//! `waitFor`, `waitForAny`, `signal` and `runId` in real JavaScript, in both engine modes:
//! where they come from, what they answer, and the errors a bad argument throws at the call.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use smol_durable_boa::{BoaEngine, IsolatedEngine};
use smol_durable_core::{
    Engine, MemoryStore, RunRequest, ScriptEngine, SignalOptions, WaitFilter, WorkflowSource,
};
use smol_durable_testkit::ScriptedProvider;

fn engines() -> Vec<(&'static str, Arc<dyn ScriptEngine>)> {
    vec![
        ("in-process", Arc::new(BoaEngine::new())),
        (
            "isolated",
            Arc::new(IsolatedEngine::new(env!(
                "CARGO_BIN_EXE_smol-durable-script-host"
            ))),
        ),
    ]
}

const META: &str = "export const meta = { name: \"t\", description: \"t\" };\n";

fn engine(scripts: Arc<dyn ScriptEngine>) -> Engine {
    Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(scripts)
        .provider(Arc::new(ScriptedProvider::new("scripted")))
        .build()
        .expect("engine")
}

/// Starts `text`; once it has `open` open waits, sends `signals` in order; returns the result
/// and the run id.
async fn run(
    engine: &Engine,
    text: &str,
    open: usize,
    signals: &[(&str, Value)],
) -> (Value, String) {
    let request = RunRequest::new(
        WorkflowSource::inline("/flows/main.mjs", format!("{META}{text}")),
        json!({}),
    );
    let handle = engine.start(request).await.expect("start");
    let run_id = handle.run_id().to_owned();
    if open > 0 {
        let filter = WaitFilter {
            run_id: Some(run_id.clone()),
            ..WaitFilter::default()
        };
        for _ in 0..2_000 {
            if engine.waits(&filter).await.expect("waits").len() >= open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (name, payload) in signals {
        engine
            .signal(&run_id, name, payload.clone(), SignalOptions::default())
            .await
            .expect("signal");
    }
    let output = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the run ends")
        .expect("the run completes");
    (output.result, run_id)
}

#[tokio::test]
async fn the_api_comes_from_workflow_extra_sw_extra_and_ctx() {
    let text = r#"import { waitFor, waitForAny, signal, runId } from "workflow:extra";
import extra from "workflow:extra";
export default async (args, ctx) => {
  const same = [
    waitFor === SW.extra.waitFor, waitForAny === ctx.extra.waitForAny,
    signal === extra.signal, runId === SW.extra.runId, runId === ctx.runId,
  ];
  const first = await waitFor("approval", { description: "ok?" });
  const any = await waitForAny(["left", "right"]);
  return { same, first, any, runId };
};
"#;
    for (mode, scripts) in engines() {
        let engine = engine(scripts);
        let (result, run_id) = run(
            &engine,
            text,
            1,
            &[("approval", json!({ "ok": true })), ("right", json!(2))],
        )
        .await;
        assert_eq!(
            result["same"],
            json!([true, true, true, true, true]),
            "{mode}"
        );
        assert_eq!(result["first"], json!({ "ok": true }), "{mode}");
        assert_eq!(
            result["any"],
            json!({ "name": "right", "value": 2 }),
            "{mode}"
        );
        assert_eq!(result["runId"], json!(run_id), "{mode}");
    }
}

#[tokio::test]
async fn a_timeout_rejects_with_a_wait_timeout_error_unless_there_is_a_default() {
    let text = r#"import { waitFor, waitForAny } from "workflow:extra";
let timedOut;
try { await waitFor("never", { timeoutMs: 20 }); } catch (e) {
  timedOut = { name: e.name, isError: e instanceof Error, message: e.message };
}
const withDefault = await waitFor("never", { timeoutMs: 20, default: "fallback" });
const undefinedDefault = await waitFor("never", { timeoutMs: 20, default: undefined });
const anyDefault = await waitForAny(["a", "b"], { timeoutMs: 20, default: 0 });
export default { timedOut, withDefault, undefinedDefault, anyDefault };
"#;
    for (mode, scripts) in engines() {
        let (result, _) = run(&engine(scripts), text, 0, &[]).await;
        assert_eq!(
            result["timedOut"]["name"],
            json!("WaitTimeoutError"),
            "{mode}"
        );
        assert_eq!(result["timedOut"]["isError"], json!(true), "{mode}");
        let message = result["timedOut"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("waitFor(\"never\") timed out: no signal arrived by its deadline "),
            "{mode}: {message}"
        );
        assert_eq!(result["withDefault"], json!("fallback"), "{mode}");
        assert_eq!(result["undefinedDefault"], Value::Null, "{mode}");
        assert_eq!(
            result["anyDefault"],
            json!({ "name": null, "value": 0 }),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn bad_arguments_throw_at_the_call() {
    let text = r#"import { waitFor, waitForAny, signal } from "workflow:extra";
const attempts = {
  name: () => waitFor("has space"),
  notString: () => waitFor(5),
  unknownOption: () => waitFor("a", { timeout: 5 }),
  negative: () => waitFor("a", { timeoutMs: -1 }),
  infinite: () => waitFor("a", { timeoutMs: Infinity }),
  tooLong: () => waitFor("a", { timeoutMs: 1e15 }),
  badSchema: () => waitFor("a", { schema: { type: 5 } }),
  anyNotArray: () => waitForAny("a"),
  anyEmpty: () => waitForAny([]),
  signalNoRun: () => signal(undefined, "a", 1),
  signalBadName: () => signal("run_x", "a b", 1),
  signalFunction: () => signal("run_x", "a", () => 1),
  signalBigInt: () => signal("run_x", "a", 1n),
};
const thrown = {};
for (const [what, attempt] of Object.entries(attempts)) {
  try {
    const promise = attempt();
    thrown[what] = "returned " + typeof promise;
  } catch (e) {
    thrown[what] = `${e.name}: ${e.message}`;
  }
}
export default thrown;
"#;
    for (mode, scripts) in engines() {
        let (result, _) = run(&engine(scripts), text, 0, &[]).await;
        let expect = |what: &str, start: &str| {
            let got = result[what].as_str().unwrap_or_default();
            assert!(got.starts_with(start), "{mode}: {what}: {got}");
        };
        expect(
            "name",
            "TypeError: waitFor(): \"has space\" is not a signal name",
        );
        expect(
            "notString",
            "TypeError: waitFor() needs signal names as strings, got a number",
        );
        expect(
            "unknownOption",
            "TypeError: waitFor() options: unknown option \"timeout\"",
        );
        expect(
            "negative",
            "TypeError: waitFor() options: timeoutMs must be a finite",
        );
        expect(
            "infinite",
            "TypeError: waitFor() options: timeoutMs must be a finite",
        );
        expect(
            "tooLong",
            "RangeError: waitFor() options: timeoutMs 1000000000000000 exceeds",
        );
        expect(
            "badSchema",
            "TypeError: waitFor() options: the schema is invalid",
        );
        expect(
            "anyNotArray",
            "TypeError: waitForAny(names, options) needs an array",
        );
        expect(
            "anyEmpty",
            "TypeError: waitForAny(names, options) needs a non-empty array",
        );
        expect(
            "signalNoRun",
            "TypeError: signal(runId, name, payload) needs a run id string",
        );
        expect(
            "signalBadName",
            "TypeError: signal(): \"a b\" is not a signal name",
        );
        expect(
            "signalFunction",
            "TypeError: signal() payload must be JSON, got a function",
        );
        expect("signalBigInt", "TypeError");
    }
}

#[tokio::test]
async fn a_script_signals_another_run_and_gets_the_receipt() {
    let receiver = r#"import { waitFor } from "workflow:extra";
export default await waitFor("ping");
"#;
    for (mode, scripts) in engines() {
        let engine = engine(scripts);
        let waiting = engine
            .start(RunRequest::new(
                WorkflowSource::inline("/flows/receiver.mjs", format!("{META}{receiver}")),
                json!({}),
            ))
            .await
            .expect("receiver");
        let target = waiting.run_id().to_owned();
        let sender = format!(
            "import {{ signal }} from \"workflow:extra\";\nexport default await signal({target:?}, \"ping\", {{ from: \"js\" }});\n"
        );
        let (receipt, _) = run(&engine, &sender, 0, &[]).await;
        assert_eq!(receipt["duplicate"], json!(false), "{mode}");
        assert!(
            receipt["signalId"]
                .as_str()
                .is_some_and(|id| id.starts_with("signal_")),
            "{mode}"
        );
        let received = tokio::time::timeout(Duration::from_secs(30), waiting.join())
            .await
            .expect("ends")
            .expect("completes");
        assert_eq!(received.result, json!({ "from": "js" }), "{mode}");
    }
}
