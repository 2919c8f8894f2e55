//! Runs that go their way: success, failure, sleeps, events, schemas, limits, deletion. (Long,
//! but one list of cases.)
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_basic_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::basic,
            $factory,
            success_path_persists_task_and_run,
            failure_records_one_attempt,
            six_workflows_share_one_store,
            sleep_is_persisted_without_a_ledger_row,
            sleep_waits_on_the_engine_clock,
            deadlock_is_reported_clearly,
            agent_cap_limits_concurrent_calls,
            phase_defaults_and_model_map_shape_the_call,
            events_are_stored_in_order,
            a_panicking_script_engine_fails_only_its_run,
            schema_output_is_validated_with_one_corrective_retry,
            deleting_a_finished_run_removes_everything_under_it
        );
    };
}

/// `{result: await agent("hello")}` completes: one call, one completed step, task and run
/// completed, attempt 1.
pub async fn success_path_persists_task_and_run(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(json!({ "result": ctx.agent("hello", Value::Null).await? }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!({ "result": "echo: hello" }));
    assert_eq!(output.attempt, 1);
    assert_eq!(provider.call_count(), 1);
    let (run, task, attempts) = states(fixture.store.as_ref(), &output.run_id).await;
    assert_eq!(
        (run, task, attempts),
        (State::Completed, State::Completed, vec![State::Completed])
    );
    assert_eq!(
        step_states(fixture.store.as_ref(), &output.run_id, StepKind::Agent).await,
        vec![State::Completed]
    );
    assert_eq!(output.token_usage.output_tokens, 1);
    assert_eq!(output.token_usage.total_tokens, 2);
}

/// A script that throws after an agent fails the run after one attempt, keeping the completed step.
pub async fn failure_records_one_attempt(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("hello", Value::Null).await?;
        Err(ScriptError::thrown("boom").with_location("main.mjs:3:7"))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let error = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect_err("fails");
    assert!(error.to_string().contains("boom"), "{error}");
    assert!(error.to_string().contains("main.mjs:3:7"), "{error}");
    assert_eq!(provider.call_count(), 1);
    let store = fixture.store.as_ref();
    let run_id = only_run(store).await;
    let (run, task, attempts) = states(store, &run_id).await;
    assert_eq!(
        (run, task, attempts),
        (State::Failed, State::Failed, vec![State::Failed])
    );
    assert_eq!(
        step_states(store, &run_id, StepKind::Agent).await,
        vec![State::Completed]
    );
    let stored = store.get_run(&run_id).await.expect("get").expect("run");
    assert!(stored.failure_reason.expect("reason")["message"]
        .as_str()
        .unwrap_or("")
        .contains("boom"));
}

/// Six workflows with overlapping calls share one store: every run completes with its own
/// steps and ledger rows, and calls overlap in time.
pub async fn six_workflows_share_one_store(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let id = ctx.args()["id"].as_u64().unwrap_or(0);
        let first = ctx.agent(format!("wf:{id}:first"), Value::Null).await?;
        let common = ctx.agent("common", Value::Null).await?;
        let third = ctx.agent(format!("wf:{id}:third"), Value::Null).await?;
        Ok(json!({ "id": id, "first": first, "common": common, "third": third }))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_default_delay(Duration::from_millis(30)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let runs = (0..6u64).map(|id| engine.run(scripts.source("main.mjs"), json!({ "id": id })));
    let outputs = futures::future::join_all(runs).await;
    for (id, output) in outputs.iter().enumerate() {
        let output = output.as_ref().expect("run");
        assert_eq!(output.result["id"], json!(id));
        assert_eq!(output.result["common"], json!("echo: common"));
        assert_eq!(output.attempt, 1);
        assert_eq!(
            step_states(fixture.store.as_ref(), &output.run_id, StepKind::Agent)
                .await
                .len(),
            3
        );
        assert_eq!(
            fixture
                .store
                .ledger_entries(&output.run_id)
                .await
                .expect("ledger")
                .len(),
            3
        );
    }
    assert_eq!(provider.call_count(), 18);
    assert_eq!(
        provider.calls_for("common"),
        6,
        "identical calls in different runs are different steps"
    );
    assert!(provider.max_in_flight() > 1, "runs must overlap");
    let mut completed = RunFilter::roots();
    completed.states = vec![State::Completed];
    assert_eq!(
        fixture
            .store
            .list_runs(&completed)
            .await
            .expect("list")
            .len(),
        6
    );
}

/// `sleep(5)` is a completed sleep step with no ledger row; the script sees `undefined`.
pub async fn sleep_is_persisted_without_a_ledger_row(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let slept = ctx.sleep(5).await?;
        Ok(json!({ "slept": true, "value": slept }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!({ "slept": true, "value": null }));
    let steps = fixture
        .store
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].kind.clone(), steps[0].state.clone()),
        (StepKind::Sleep, State::Completed)
    );
    let wake_at = steps[0].input["wakeAt"].as_i64().expect("wakeAt");
    assert_eq!(steps[0].input["durationMs"], json!(5));
    let result = steps[0].result.clone().expect("result");
    assert_eq!(result["ok"], json!(true));
    assert_eq!(result["wakeAt"], json!(wake_at));
    assert!(result["completedAt"].as_i64().expect("completedAt") >= wake_at);
    assert!(fixture
        .store
        .ledger_entries(&output.run_id)
        .await
        .expect("ledger")
        .is_empty());
}

/// A one-hour sleep completes as soon as the engine's clock passes its `wakeAt`: sleeps and
/// leases follow the [`Clock`](smol_durable_core::Clock), so tests never wait for real time.
pub async fn sleep_waits_on_the_engine_clock(fixture: Fixture) {
    let clock = smol_durable_core::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(3_600_000).await?;
        Ok(json!("awake"))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let steps = wait_for_steps(fixture.store.as_ref(), handle.run_id(), 1).await;
    assert_eq!(steps[0].input["wakeAt"], json!(4_600_000));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = fixture
        .store
        .get_run(handle.run_id())
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        run.state,
        State::Running,
        "the sleep must not end before the clock moves"
    );
    clock.advance(Duration::from_millis(3_600_000));
    let output = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("woken by the clock")
        .expect("run");
    assert_eq!(output.result, json!("awake"));
    let steps = fixture
        .store
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(
        steps[0].result.as_ref().expect("result")["completedAt"],
        json!(4_600_000)
    );
}

/// A script engine's deadlock report fails the run with a clear "deadlock" error.
pub async fn deadlock_is_reported_clearly(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |_ctx| async move {
        Err(ScriptError::deadlock(
            "the workflow awaits a promise that can never settle",
        ))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let error = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect_err("deadlock");
    match error.error() {
        Error::Script(script) => {
            assert_eq!(script.kind(), smol_durable_core::ScriptErrorKind::Deadlock)
        }
        other => panic!("expected a script deadlock, got {other:?}"),
    }
    assert!(error.to_string().starts_with("deadlock: "), "{error}");
    let (run, _, _) = states(
        fixture.store.as_ref(),
        &only_run(fixture.store.as_ref()).await,
    )
    .await;
    assert_eq!(run, State::Failed);
}

/// The agent cap bounds concurrent provider calls.
pub async fn agent_cap_limits_concurrent_calls(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let calls = (0..5)
            .map(|i| ctx.agent(format!("p{i}"), Value::Null))
            .collect();
        let values = ctx.parallel(calls).await;
        Ok(Value::Array(values))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_default_delay(Duration::from_millis(40)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let request = RunRequest::new(scripts.source("main.mjs"), json!({})).max_parallel_agents(2);
    let output = engine
        .start(request)
        .await
        .expect("start")
        .join()
        .await
        .expect("run");
    assert_eq!(output.result.as_array().map(Vec::len), Some(5));
    assert_eq!(output.result[4], json!("echo: p4"));
    assert_eq!(provider.max_in_flight(), 2);
}

/// `phase()` is inherited by later calls; phase defaults from `meta` and the model map shape
/// the provider request and the signature.
pub async fn phase_defaults_and_model_map_shape_the_call(fixture: Fixture) {
    let meta =
        WorkflowMeta::new("phased", "phases").with_phase(PhaseMeta::new("plan").with_model("fast"));
    let scripts = ScriptedEngine::new().workflow_with_meta("main.mjs", meta, |ctx| async move {
        ctx.phase("plan");
        ctx.log("planning");
        let planned = ctx.agent("plan it", Value::Null).await?;
        let explicit = ctx
            .agent(
                "write it",
                json!({ "phase": "write", "model": "big", "temperature": 0 }),
            )
            .await?;
        Ok(json!([planned, explicit]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .model_alias("fast", "vendor/fast-v2")
        .build()
        .expect("engine");
    let request = RunRequest::new(scripts.source("main.mjs"), json!({})).cwd("/work/project");
    let output = engine
        .start(request)
        .await
        .expect("start")
        .join()
        .await
        .expect("run");
    let calls = provider.calls();
    assert_eq!(calls[0].request.context.phase.as_deref(), Some("plan"));
    assert_eq!(calls[0].request.model(), Some("vendor/fast-v2"));
    assert_eq!(
        calls[0].request.options,
        json!({
            "model": "vendor/fast-v2",
            "modelProvider": "vendor",
            "modelSelector": "vendor/fast-v2",
            "phase": "plan",
            "requestedModel": "fast"
        }),
        "the provider sees the rewritten options"
    );
    assert_eq!(
        calls[0].request.context.cwd.as_deref(),
        Some("/work/project")
    );
    assert_eq!(calls[1].request.context.phase.as_deref(), Some("write"));
    assert_eq!(calls[1].request.model(), Some("big"));
    assert_eq!(
        calls[1].request.options,
        json!({ "model": "big", "phase": "write", "temperature": 0 })
    );
    let steps = fixture
        .store
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    let planned = steps
        .iter()
        .find(|s| s.input_signature_json.contains("plan it"))
        .expect("step");
    assert!(
        planned
            .input_signature_json
            .contains(r#""context":{"cwd":"/work/project","phase":"plan"}"#),
        "{}",
        planned.input_signature_json
    );
    assert!(
        planned.input_signature_json.contains(concat!(
            r#""options":{"model":"vendor/fast-v2","modelProvider":"vendor","#,
            r#""modelSelector":"vendor/fast-v2","phase":"plan","requestedModel":"fast"}"#
        )),
        "{}",
        planned.input_signature_json
    );
}

/// Every event of a run is stored in emission order and readable back.
pub async fn events_are_stored_in_order(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.phase("one");
        ctx.log("a");
        ctx.agent("x", Value::Null).await?;
        ctx.log("b");
        Ok(json!(1))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let sink = Arc::new(RecordingEventSink::new());
    let engine = builder(&fixture, &scripts, &provider)
        .event_sink(sink.clone())
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let stored = engine.events(&output.run_id, 0, 100).await.expect("events");
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "workflow.started",
            "workflow.phase",
            "workflow.log",
            "workflow.agent_started",
            "workflow.agent_completed",
            "workflow.log",
            "workflow.result"
        ]
    );
    let received: Vec<EventType> = sink.events().iter().map(|e| e.event_type).collect();
    assert_eq!(
        received.len(),
        stored.len(),
        "sinks receive what the store holds"
    );
    assert!(
        stored[0].payload.get("elapsedNanos").is_none(),
        "the root start has no elapsedNanos"
    );
    assert!(stored[1].payload["elapsedNanos"].as_u64().is_some());
    assert!(
        stored[0].payload["data"]["startTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{}",
        stored[0].payload
    );
    assert_eq!(stored[1].payload["data"], json!({ "name": "one" }));
    assert_eq!(stored[2].payload["data"], json!({ "message": "a" }));
    assert_eq!(stored[3].payload["metadata"]["provider"], json!("scripted"));
    assert_eq!(stored[3].payload["metadata"]["runId"], json!(output.run_id));
    assert_eq!(
        stored[3].payload["data"],
        json!({ "phase": "one", "promptPreview": "x" })
    );
    assert_eq!(stored[6].payload["data"]["results"], json!(1));
    assert!(stored[6].payload["data"]["tokenUsage"].is_object());
    let mut last = 0;
    for event in &stored[1..] {
        let elapsed = event.payload["elapsedNanos"]
            .as_u64()
            .expect("elapsedNanos");
        assert!(elapsed >= last, "elapsedNanos never decreases");
        last = elapsed;
    }
}

/// A script engine that panics fails its own run with a clear error; the engine keeps serving.
pub async fn a_panicking_script_engine_fails_only_its_run(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("panics.mjs", |_ctx| async move {
            if std::hint::black_box(true) {
                panic!("engine bug");
            }
            Ok(Value::Null)
        })
        .workflow("fine.mjs", |ctx| async move {
            Ok(ctx.agent("still here", Value::Null).await?)
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let error = engine
        .run(scripts.source("panics.mjs"), json!({}))
        .await
        .expect_err("panics");
    assert!(
        error
            .to_string()
            .contains("the script engine panicked: engine bug"),
        "{error}"
    );
    let failed = fixture
        .store
        .list_runs(&RunFilter::roots())
        .await
        .expect("list");
    assert_eq!(failed[0].state, State::Failed);
    let output = engine
        .run(scripts.source("fine.mjs"), json!({}))
        .await
        .expect("next run");
    assert_eq!(output.result, json!("echo: still here"));
}

/// `schema` output is validated; a mismatch gets one corrective retry with the errors in the
/// prompt; a second mismatch fails the call. Every answer is billed.
pub async fn schema_output_is_validated_with_one_corrective_retry(fixture: Fixture) {
    let schema = json!({
        "type": "object",
        "properties": { "name": { "type": "string" } },
        "required": ["name"]
    });
    let scripts = ScriptedEngine::new().workflow("main.mjs", move |ctx| {
        let schema = schema.clone();
        async move {
            let fixed = ctx
                .agent("fixed on retry", json!({ "schema": schema }))
                .await?;
            let text = ctx.agent("json text", json!({ "schema": schema })).await?;
            let never = ctx.agent("never right", json!({ "schema": schema })).await;
            let bad_schema = ctx
                .agent("bad schema", json!({ "schema": { "type": 5 } }))
                .await;
            Ok(json!({
                "fixed": fixed,
                "text": text,
                "never": never.err().map(|e| e.message),
                "badSchema": bad_schema.err().map(|e| e.message),
            }))
        }
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_responder(|request| {
        let corrective = request
            .prompt
            .contains("did not match the required JSON schema");
        Some(
            match (request.prompt.split('\n').next().unwrap_or(""), corrective) {
                ("fixed on retry", false) => json!({ "nom": "x" }),
                ("fixed on retry", true) => json!({ "name": "Ada" }),
                ("json text", _) => json!("{\"name\": \"Bo\"}"),
                (_, _) => json!(42),
            },
        )
    }));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result["fixed"], json!({ "name": "Ada" }));
    assert_eq!(
        output.result["text"],
        json!({ "name": "Bo" }),
        "JSON text is parsed"
    );
    // smol-wf's messages: `<path> <problem>` after a fixed prefix.
    assert_eq!(
        output.result["never"],
        json!("Structured output did not match JSON Schema: / 42 is not of type \"object\""),
        "the corrective retry did not match either"
    );
    let bad = output.result["badSchema"]
        .as_str()
        .expect("bad schema fails");
    assert!(
        bad.starts_with("Structured output did not match JSON Schema: / schema is invalid: "),
        "{bad}"
    );
    assert_eq!(
        provider.calls_for("bad schema"),
        0,
        "an invalid schema is refused before any call"
    );
    let corrective = provider
        .calls()
        .into_iter()
        .find(|call| call.request.prompt.starts_with("fixed on retry\n"))
        .expect("corrective call");
    assert!(
        corrective.request.prompt.contains("name"),
        "{}",
        corrective.request.prompt
    );
    assert_eq!(provider.call_count(), 5, "2 + 1 + 2 calls");
    let ledger = fixture
        .store
        .ledger_entries(&output.run_id)
        .await
        .expect("ledger");
    let attempts = ledger
        .iter()
        .filter(|e| e.source_type == smol_durable_core::store::LedgerSource::AgentTry)
        .count();
    let steps = ledger
        .iter()
        .filter(|e| e.source_type == smol_durable_core::store::LedgerSource::AgentStep)
        .count();
    assert_eq!((attempts, steps), (3, 2), "rejected answers are billed too");
    let states = step_states(fixture.store.as_ref(), &output.run_id, StepKind::Agent).await;
    assert_eq!(states.iter().filter(|s| **s == State::Failed).count(), 1);
}

/// Deleting a finished run removes its children, attempts, steps, ledger rows and events, and
/// nothing of any other run; an unfinished run and a child run are refused.
pub async fn deleting_a_finished_run_removes_everything_under_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", |ctx| async move {
            Ok(ctx.agent("in the child", Value::Null).await?)
        })
        .workflow("flows/main.mjs", |ctx| async move {
            let answer = ctx.agent("in the parent", Value::Null).await?;
            ctx.sleep(1).await?;
            let child = ctx
                .workflow(json!({ "scriptPath": "./child.mjs" }), json!({}))
                .await?;
            Ok(json!([answer, child]))
        });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 2)));
    let engine = builder(&fixture, &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    let doomed = engine
        .run(scripts.source("flows/main.mjs"), json!({}))
        .await
        .expect("run");
    let kept = engine
        .run(scripts.source("flows/main.mjs"), json!({ "keep": true }))
        .await
        .expect("run");
    let store = fixture.store.as_ref();
    let runs = store.list_runs(&RunFilter::default()).await.expect("list");
    let child = runs
        .iter()
        .find(|run| run.root_run_id == doomed.run_id && !run.is_root())
        .expect("child run")
        .run_id
        .clone();
    let refused = engine.delete(&child).await.expect_err("a child is refused");
    assert!(
        refused.to_string().contains("delete its root run"),
        "{refused}"
    );

    engine.delete(&doomed.run_id).await.expect("delete");
    for run_id in [&doomed.run_id, &child] {
        assert!(store.get_run(run_id).await.expect("get").is_none());
        assert!(store.load_steps(run_id).await.expect("steps").is_empty());
        assert!(store
            .read_events(run_id, 0, 100)
            .await
            .expect("events")
            .is_empty());
        assert!(store
            .ledger_entries(run_id)
            .await
            .expect("ledger")
            .is_empty());
    }
    assert_eq!(store.budget_spent(&doomed.run_id).await.expect("spent"), 0);
    assert!(store
        .get_task(&doomed.task_id)
        .await
        .expect("task")
        .is_none());
    assert!(store
        .list_attempts(&doomed.task_id)
        .await
        .expect("attempts")
        .is_empty());
    assert!(matches!(
        engine.delete(&doomed.run_id).await,
        Err(Error::RunNotFound { .. })
    ));

    // The other run is untouched and still resumable.
    assert_eq!(
        store.load_steps(&kept.run_id).await.expect("steps").len(),
        3
    );
    assert!(!store
        .read_events(&kept.run_id, 0, 100)
        .await
        .expect("events")
        .is_empty());
    assert_eq!(store.budget_spent(&kept.run_id).await.expect("spent"), 4);
    let again = engine
        .resume(&kept.run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(again.result, kept.result);

    // A task that has not finished is refused, and keeps everything.
    let pending = store
        .create_run(NewRun::new(
            ClaimScope::Local,
            "owner_delete",
            WorkflowInfo::new(),
            json!({}),
            1,
        ))
        .await
        .expect("create");
    let error = store
        .delete_task(&pending.task.task_id)
        .await
        .expect_err("unfinished");
    assert_eq!(error.kind(), smol_durable_core::StoreErrorKind::Conflict);
    assert!(
        error
            .to_string()
            .contains("only finished runs can be deleted"),
        "{error}"
    );
    assert!(store
        .get_run(&pending.run.run_id)
        .await
        .expect("get")
        .is_some());
    assert!(!store
        .delete_task("task_missing")
        .await
        .expect("no such task"));
}
