//! Size limits (`Limits`): prompts, agent results, child and run results are refused with a
//! clear error before they reach the database; oversized event payloads are stored truncated.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use serde_json::{json, Value};
use smol_durable_core::store::RunFilter;
use smol_durable_core::{Error, Limits, RunOutput, ScriptErrorKind};
use smol_durable_testkit::ScriptedProvider;

const META: &str = "export const meta = { name: \"limits\", description: \"limits\" };\n";

mod common;
use common::Setup;

fn setup(provider: ScriptedProvider) -> Setup {
    let limits = Limits {
        max_result_bytes: 10_000,
        max_prompt_bytes: 1_000,
        max_event_payload_bytes: 600,
        ..Limits::default()
    };
    common::setup_with_limits(provider, limits)
}

/// Runs `body` (after a `meta` line) with no args.
async fn run(s: &Setup, name: &str, body: &str) -> Result<RunOutput, Error> {
    s.run(name, &format!("{META}{body}"), json!({})).await
}

async fn only_root_run(s: &Setup) -> String {
    let runs = s
        .engine
        .store()
        .list_runs(&RunFilter::roots())
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    runs[0].run_id.clone()
}

#[tokio::test]
async fn a_prompt_over_the_limit_is_refused_before_the_provider_is_called() {
    let s = setup(ScriptedProvider::new("scripted"));
    let error = run(
        &s,
        "prompt.mjs",
        "export default await agent('p'.repeat(1001));\n",
    )
    .await
    .expect_err("prompt too large");
    assert!(
        error
            .to_string()
            .contains("the agent prompt is 1001 bytes, more than the 1000-byte limit"),
        "{error}"
    );
    assert_eq!(s.provider.call_count(), 0);
    // At the limit is fine.
    let fine = run(
        &s,
        "fine.mjs",
        "export default await agent('p'.repeat(1000));\n",
    )
    .await
    .expect("a prompt at the limit");
    assert_eq!(fine.result, json!(format!("echo: {}", "p".repeat(1000))));
}

#[tokio::test]
async fn an_agent_result_over_the_limit_fails_its_step_and_is_billed() {
    let big = "r".repeat(20_000);
    let s = setup(ScriptedProvider::new("scripted").with_output("big", json!(big)));
    let error = run(&s, "agent.mjs", "export default await agent('big');\n")
        .await
        .expect_err("result too large");
    let message = error.to_string();
    assert!(
        message.contains("the agent result is") && message.contains("max_result_bytes"),
        "{message}"
    );
    // A limit, so a worker does not retry it (and pay for the same answer again).
    match &error {
        Error::Script(script) => assert_eq!(script.kind(), ScriptErrorKind::Limit),
        other => panic!("expected a limit error, got {other:?}"),
    }
    let run_id = only_root_run(&s).await;
    let store = s.engine.store();
    let steps = store.load_steps(&run_id).await.expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state.as_str(), "failed");
    assert_eq!(steps[0].result, None, "nothing oversized was stored");
    let ledger = store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 1, "the call was paid for, so it is billed");
}

#[tokio::test]
async fn a_run_or_child_result_over_the_limit_fails_with_a_limit_error() {
    let s = setup(ScriptedProvider::new("scripted"));
    let error = run(&s, "run.mjs", "export default 'x'.repeat(20000);\n")
        .await
        .expect_err("run result too large");
    match &error {
        Error::Script(script) => assert_eq!(script.kind(), ScriptErrorKind::Limit),
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("the workflow result is 20002 bytes"),
        "{error}"
    );
    let run_id = only_root_run(&s).await;
    let record = s.engine.store().get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(record.state.as_str(), "failed");
    assert_eq!(record.completed_payload, None);

    s.write(
        "child.mjs",
        &format!("{META}export default 'c'.repeat(20000);\n"),
    );
    let error = run(&s, "parent.mjs",
            "let caught;\ntry { await workflow({ scriptPath: './child.mjs' }); } catch (e) { caught = String(e.message ?? e); }\nexport default caught;\n",
        )
        .await
        .expect("the parent catches its child's failure");
    let caught = error.result.as_str().unwrap_or_default().to_owned();
    assert!(caught.contains("result is 20002 bytes"), "{caught}");
}

#[tokio::test]
async fn oversized_event_payloads_are_stored_truncated_with_a_marker() {
    let s = setup(ScriptedProvider::new("scripted"));
    let output = run(
        &s,
        "events.mjs",
        "log('l'.repeat(900));\nexport default await agent('e'.repeat(900));\n",
    )
    .await
    .expect("run");
    assert_eq!(
        output.result.as_str().map(str::len),
        Some(906),
        "the result itself is whole"
    );
    let events = s
        .engine
        .store()
        .read_events(&output.run_id, 0, 1_000)
        .await
        .expect("events");
    let truncated: Vec<&Value> = events
        .iter()
        .map(|event| &event.payload)
        .filter(|payload| payload.to_string().contains("\"truncated\":true"))
        .collect();
    // The log's message and the result event's `results` are over the limit; the agent
    // events carry only a 200-character prompt preview.
    assert_eq!(truncated.len(), 2, "{events:#?}");
    for payload in &truncated {
        let data = &payload["data"];
        assert_eq!(data["truncated"], json!(true), "{payload}");
        assert!(data["originalBytes"].as_u64() > Some(600), "{payload}");
        let text = data
            .get("message")
            .or_else(|| data.get("results"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(text.ends_with("bytes truncated]"), "{payload}");
    }
    let started = events
        .iter()
        .find(|event| event.event_type == "workflow.agent_started")
        .expect("agent_started");
    assert_eq!(
        started.payload["data"]["promptPreview"],
        json!(format!("{}…", "e".repeat(200)))
    );
    for event in &events {
        let size = event.payload.to_string().len();
        // The data is bounded; the envelope (ids, times, type) adds a few hundred bytes.
        assert!(size < 1_200, "{} is {size} bytes", event.event_type);
    }
}

#[tokio::test]
async fn a_completed_step_replays_even_if_its_prompt_is_now_over_the_limit() {
    use std::sync::Arc;
    let store: Arc<dyn smol_durable_core::DurableStore> =
        Arc::new(smol_durable_core::MemoryStore::new());
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "q",
        1,
        smol_durable_core::ProviderErrorKind::Terminal,
        None,
    ));
    let engine = |max_prompt_bytes| {
        smol_durable_core::Engine::builder()
            .store(Arc::clone(&store))
            .script_engine(Arc::new(smol_durable_boa::BoaEngine::new()))
            .provider(provider.clone())
            .limits(Limits {
                max_prompt_bytes,
                ..Limits::default()
            })
            .build()
            .expect("engine")
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("long.mjs");
    let body = "const long = await agent('p'.repeat(500));\nexport default [long.length, await agent('q')];\n";
    std::fs::write(&path, format!("{META}{body}")).expect("write");
    let source = smol_durable_core::WorkflowSource::from_file(&path).expect("source");
    engine(1_000)
        .run(source, json!({}))
        .await
        .expect_err("q fails the first time");
    let runs = store.list_runs(&RunFilter::roots()).await.expect("runs");
    // The limit is lowered below the completed step's prompt: it replays, only q runs.
    let output = engine(100)
        .resume(&runs[0].run_id, smol_durable_core::ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("the resumed run completes");
    assert_eq!(output.result, json!([506, "echo: q"]));
    assert_eq!(provider.calls_for(&"p".repeat(500)), 1);
}
