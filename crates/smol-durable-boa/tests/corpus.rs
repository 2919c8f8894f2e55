//! The example workflows (a copy of the repository's `examples/workflows/` in
//! `tests/example_workflows/`, so the packaged crate tests itself; the examples crate's
//! `workflow_copies` test keeps the two identical) and the script corpus (`tests/scripts/`), run
//! through the whole engine.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use smol_durable_boa::BoaEngine;
use smol_durable_core::{
    DebugProvider, Engine, Error, MemoryStore, ProviderErrorKind, RunOutput, RunRequest,
    ScriptErrorKind, Usage, WorkflowSource,
};
use smol_durable_testkit::ScriptedProvider;

/// One of the example workflows users copy from (`examples/workflows/`, copied here).
fn example(name: &str) -> WorkflowSource {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/example_workflows")
        .join(name);
    WorkflowSource::from_file(path).expect("example")
}

fn script(name: &str) -> WorkflowSource {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name);
    WorkflowSource::from_file(path).expect("script")
}

fn engine(provider: &Arc<ScriptedProvider>) -> Engine {
    Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(provider.clone())
        .model_alias("fast", "vendor/fast-1")
        .build()
        .expect("engine")
}

async fn run(engine: &Engine, request: RunRequest) -> RunOutput {
    tokio::time::timeout(Duration::from_secs(20), async {
        engine
            .start(request)
            .await
            .expect("start")
            .join()
            .await
            .expect("run")
    })
    .await
    .expect("no hang")
}

#[tokio::test]
async fn multi_phase_pipeline_applies_phase_defaults() {
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine(&provider);
    let request = RunRequest::new(
        example("multi_phase.mjs"),
        json!({ "topics": ["tea", "coffee"] }),
    );
    let output = run(&engine, request).await;
    assert_eq!(
        output.result["notes"],
        json!([
            "echo: write about tea from: echo: outline tea",
            "echo: write about coffee from: echo: outline coffee"
        ])
    );
    let calls = provider.calls();
    let outline = calls
        .iter()
        .find(|c| c.request.prompt == "outline tea")
        .expect("outline call");
    assert_eq!(outline.request.context.phase.as_deref(), Some("plan"));
    assert_eq!(
        outline.request.model(),
        Some("vendor/fast-1"),
        "meta phase model through the model map"
    );
    let write = calls
        .iter()
        .find(|c| c.request.prompt.starts_with("write about tea"))
        .expect("write call");
    assert_eq!(write.request.model(), None);
}

#[tokio::test]
async fn budget_aware_script_stops_when_the_allowance_runs_out() {
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = engine(&provider);
    let request =
        RunRequest::new(example("budget_aware.mjs"), json!({ "costPerCall": 4 })).budget_total(10);
    let output = run(&engine, request).await;
    assert_eq!(output.result["answers"].as_array().map(Vec::len), Some(2));
    assert_eq!(output.result["spent"], json!(8));
    assert_eq!(output.result["left"], json!(2));
}

#[tokio::test]
async fn workflow_extra_imports_every_way() {
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine(&provider);
    let output = run(
        &engine,
        RunRequest::new(example("durable_sleep.mjs"), json!({})),
    )
    .await;
    assert_eq!(output.result, json!({ "slept": true }));
    let steps = engine
        .store()
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(steps.len(), 5, "five durable sleeps");
}

#[tokio::test]
async fn children_run_inside_parallel_alongside_a_sleep() {
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_default_delay(Duration::from_secs(1)));
    let engine = engine(&provider);
    let output = run(&engine, RunRequest::new(example("parent.mjs"), json!({}))).await;
    assert_eq!(
        output.result,
        json!({
            "first": { "n": 1, "answer": "echo: child 1" },
            "second": { "n": 2, "answer": "echo: child 2" },
            "napped": "napped"
        })
    );
    assert_eq!(
        provider.max_in_flight(),
        2,
        "the two children's agents overlap"
    );
    let runs = engine.list_runs(&Default::default()).await.expect("runs");
    assert_eq!(runs.len(), 3, "a root and two child runs");
}

#[tokio::test]
async fn structured_output_reaches_the_script_as_an_object() {
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_output("extract the person", json!({ "name": "Ada", "age": 36 })),
    );
    let engine = engine(&provider);
    let output = run(
        &engine,
        RunRequest::new(example("structured.mjs"), json!({})),
    )
    .await;
    assert_eq!(
        output.result,
        json!({ "greeting": "hello Ada", "nextYear": 37 })
    );
    let options: &Value = &provider.calls()[0].request.options;
    assert_eq!(options["schema"]["required"], json!(["name", "age"]));
}

/// What an `errors/*.mjs` script declares about the way it fails, in `// key: value` lines at
/// its top: `expect` (a part of the error's message, required), `kind` (the script error kind),
/// `at` (`line:col` the location ends with), `calls` (provider calls made), `budget` (the run's
/// output-token budget).
#[derive(Debug, Default)]
struct Expectation {
    message: String,
    kind: Option<String>,
    at: Option<String>,
    calls: Option<usize>,
    budget: Option<u64>,
}

fn expectation(name: &str, text: &str) -> Expectation {
    let mut expected = Expectation::default();
    for line in text.lines().map_while(|line| line.strip_prefix("// ")) {
        let (key, value) = line
            .split_once(": ")
            .expect("a `// key: value` header line");
        let value = value.to_owned();
        match key {
            "expect" => expected.message = value,
            "kind" => expected.kind = Some(value),
            "at" => expected.at = Some(value),
            "calls" => expected.calls = Some(value.parse().expect("calls: a number")),
            "budget" => expected.budget = Some(value.parse().expect("budget: a number")),
            other => panic!("{name}: unknown header {other:?}"),
        }
    }
    assert!(!expected.message.is_empty(), "{name}: no `// expect:` line");
    expected
}

fn kind_name(kind: ScriptErrorKind) -> String {
    format!("{kind:?}").to_lowercase()
}

/// Every error message a script can meet (docs/javascript-api.md) has a script under
/// `tests/scripts/errors/` that meets it; each must fail its run with that message, and only that.
#[tokio::test]
async fn every_error_script_fails_with_its_documented_message() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/errors");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("errors directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "mjs"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 30, "the corpus lost scripts: {paths:?}");
    let mut mismatches = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let source = WorkflowSource::from_file(&path).expect("script");
        let expected = expectation(&name, &source.text);
        let provider = Arc::new(
            ScriptedProvider::new("scripted")
                .with_usage(Usage::tokens(1, 4))
                .fail_first("fails", 1, ProviderErrorKind::Terminal, None),
        );
        let engine = engine(&provider);
        let mut request = RunRequest::new(source, json!({ "topic": "tea" }));
        if let Some(total) = expected.budget {
            request = request.budget_total(total);
        }
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            engine.start(request).await?.join().await
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: the run hung"));
        let error = match outcome {
            Ok(output) => {
                mismatches.push(format!("{name}: succeeded with {}", output.result));
                continue;
            }
            Err(error) => error,
        };
        let text = error.to_string();
        if !text.contains(&expected.message) {
            mismatches.push(format!("{name}: {text:?} lacks {:?}", expected.message));
        }
        let script = match &error {
            Error::Script(script) => Some(script),
            _ => None,
        };
        if let Some(kind) = &expected.kind {
            let actual = script.map(|s| kind_name(s.kind()));
            if actual.as_deref() != Some(kind.as_str()) {
                mismatches.push(format!("{name}: kind {actual:?}, expected {kind}"));
            }
        }
        if let Some(at) = &expected.at {
            let location = script.and_then(|s| s.location()).unwrap_or_default();
            if !location.ends_with(&format!("{name}:{at}")) {
                mismatches.push(format!("{name}: located at {location:?}, expected {at}"));
            }
        }
        if let Some(calls) = expected.calls {
            if provider.call_count() != calls {
                mismatches.push(format!(
                    "{name}: {} provider calls, expected {calls}",
                    provider.call_count()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn every_global_is_reachable_from_a_script_and_its_ctx() {
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 2)));
    let engine = engine(&provider);
    // The child's agent is billed to the same budget: three calls at two output tokens.
    let request =
        RunRequest::new(script("globals.mjs"), json!({ "topic": "tea" })).budget_total(100);
    let output = run(&engine, request).await;
    assert_eq!(
        output.result,
        json!({
            "about": "echo: about tea",
            "second": "echo: second",
            "sums": [2, 4],
            "child": "echo: child 3",
            "frozen": "Cannot modify workflow value",
            "spent": 6,
            "left": 94,
            "sameArgs": true
        })
    );
    let calls = provider.calls();
    let phase_and_model = |prompt: &str| {
        let call = calls
            .iter()
            .find(|c| c.request.prompt == prompt)
            .expect("call");
        (
            call.request.context.phase.clone(),
            call.request.model().map(str::to_owned),
        )
    };
    assert_eq!(
        phase_and_model("about tea"),
        (Some("gather".into()), Some("vendor/fast-1".into()))
    );
    assert_eq!(phase_and_model("second"), (Some("other".into()), None));
    let events = engine.events(&output.run_id, 0, 100).await.expect("events");
    let logs: Vec<&Value> = events
        .iter()
        .filter(|e| e.event_type == "workflow.log")
        .map(|e| &e.payload["data"])
        .collect();
    assert_eq!(
        logs,
        [
            &json!({ "message": "gathering {\"topic\":\"tea\"}" }),
            &json!({ "message": "done" })
        ]
    );
    let phases: Vec<&Value> = events
        .iter()
        .filter(|e| e.event_type == "workflow.phase")
        .map(|e| &e.payload["data"])
        .collect();
    assert_eq!(
        phases,
        [&json!({ "name": "gather" }), &json!({ "name": "report" })],
        "gather and report"
    );
    let steps = engine
        .store()
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(
        steps.len(),
        6,
        "two agents, three sleeps and a child workflow"
    );
}

#[tokio::test]
async fn the_debug_provider_answers_a_schema_with_a_value_that_validates() {
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()
        .expect("engine");
    let output = run(
        &engine,
        RunRequest::new(example("structured.mjs"), json!({})),
    )
    .await;
    assert_eq!(
        output.result,
        json!({ "greeting": "hello debug-string", "nextYear": 1 })
    );
    // "extract the person" is 18 bytes; {"age":0,"name":"debug-string"} is 31.
    assert_eq!(output.token_usage.input_tokens, 5);
    assert_eq!(output.token_usage.output_tokens, 8);
}

#[tokio::test]
async fn approval_loops_through_a_revision_and_a_timeout_rejects() {
    use smol_durable_core::{SignalOptions, WaitFilter};
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine(&provider);
    let handle = engine
        .start(RunRequest::new(
            example("approval.mjs"),
            json!({ "task": "ship it" }),
        ))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    let filter = WaitFilter {
        run_id: Some(run_id.clone()),
        ..WaitFilter::default()
    };
    let answers = [
        json!({ "decision": "revise", "comment": "shorter" }),
        json!({ "decision": "approve" }),
    ];
    for (round, answer) in answers.into_iter().enumerate() {
        let description = loop {
            let waits = engine.waits(&filter).await.expect("waits");
            if let Some(wait) = waits.first() {
                if wait
                    .description
                    .as_deref()
                    .is_some_and(|d| d.starts_with(&format!("Round {}", round + 1)))
                {
                    break wait.description.clone().unwrap_or_default();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(description.contains("echo: "), "{description}");
        engine
            .signal(&run_id, "review", answer, SignalOptions::default())
            .await
            .expect("signal");
    }
    let output = tokio::time::timeout(Duration::from_secs(20), handle.join())
        .await
        .expect("no hang")
        .expect("run");
    assert_eq!(output.result["decision"], json!("approve"));
    assert_eq!(output.result["rounds"], json!(2));
    assert!(
        output.result["plan"]
            .as_str()
            .is_some_and(|plan| plan.starts_with("echo: Revise this plan")),
        "{}",
        output.result
    );
    // Nobody answers: the timeout's default rejects.
    let timed_out = run(
        &engine,
        RunRequest::new(example("approval.mjs"), json!({ "timeoutMs": 30 })),
    )
    .await;
    assert_eq!(timed_out.result["decision"], json!("reject"));
    assert_eq!(
        timed_out.result["comment"],
        json!("nobody answered in time")
    );
}

/// The JavaScript thread drives its host calls itself; a script that keeps its job queue busy
/// without awaiting a call still has them driven, so a call finishes while the script spins.
#[tokio::test]
async fn host_calls_progress_while_the_script_keeps_its_job_queue_busy() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("busy.mjs");
    std::fs::write(
        &path,
        "export const meta = { name: \"busy\", description: \"spins on promise jobs\" };\n\
         const slow = agent(\"slow\");\n\
         let turns = 0;\n\
         const spin = () => (++turns < 60000 ? Promise.resolve().then(spin) : turns);\n\
         await spin();\n\
         const after = await agent(\"after\");\n\
         export default [await slow, after];\n",
    )
    .expect("write");
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_millis(20)));
    let engine = engine(&provider);
    let output = run(
        &engine,
        RunRequest::new(WorkflowSource::from_file(&path).expect("source"), json!({})),
    )
    .await;
    assert_eq!(output.result, json!(["echo: slow", "echo: after"]));
    let calls = provider.calls();
    let ended = |prompt: &str| {
        calls
            .iter()
            .find(|call| call.request.prompt == prompt)
            .and_then(|call| call.ended)
            .expect("ended")
    };
    let after_started = calls
        .iter()
        .find(|call| call.request.prompt == "after")
        .expect("after")
        .started;
    assert!(
        ended("slow") < after_started,
        "the slow call finished while the script was spinning, before its next call"
    );
}
