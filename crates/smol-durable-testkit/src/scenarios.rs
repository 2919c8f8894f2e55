//! Whole-engine scenarios run on a store: the behaviours of the runner smol-durable descends
//! from, plus the ones SPEC adds. Invoke them all with
//! [`engine_conformance_tests!`](crate::engine_conformance_tests).
//!
//! These functions are test cases: they assert, and a failed assertion panics.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable::store::{
    AttemptStart, ClaimScope, InsertStep, NewRun, NewStep, OwnerRecord, RunFilter, StartAttempt,
    State, StepKind, WorkflowInfo,
};
use smol_durable::{
    AgentResponse, BoxError, DurableStore, Engine, EngineBuilder, Error, EventType, PhaseMeta,
    ProviderErrorKind, ResumeOptions, RunRequest, ScriptError, SessionLogSink, SubmitOptions,
    Usage, WorkerOptions, WorkflowMeta,
};

use crate::{
    FaultPlan, FaultyStore, Fixture, RecordingEventSink, ScriptedEngine, ScriptedProvider,
};

/// Expands to one `#[tokio::test]` per engine scenario, like
/// [`store_conformance_tests!`](crate::store_conformance_tests).
#[macro_export]
macro_rules! engine_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_cases!(
            scenarios,
            $factory,
            success_path_persists_task_and_run,
            runtime_retry_without_global_retry_bills_failed_tries,
            failure_records_one_attempt,
            resume_replays_without_calling_the_provider_again,
            cancellation_marks_attempt_run_and_task_cancelled,
            session_is_exported_before_the_run_completes,
            session_is_exported_before_the_run_fails,
            session_is_exported_before_the_run_is_cancelled,
            six_workflows_share_one_store,
            sleep_is_persisted_without_a_ledger_row,
            budget_exhaustion_rejects_before_the_provider_is_called,
            child_workflow_is_a_durable_step,
            deadlock_is_reported_clearly,
            cancellation_from_another_engine_is_noticed_by_heartbeat,
            agent_cap_limits_concurrent_calls,
            phase_defaults_and_model_map_shape_the_call,
            heartbeat_keeps_a_long_call_leased,
            resuming_a_completed_run_changes_nothing,
            resume_takes_over_from_a_dead_owner_at_once,
            events_are_stored_in_order,
            sleep_waits_on_the_engine_clock,
            a_step_held_by_a_dead_worker_is_reclaimed_when_its_lease_expires,
            a_caller_waiting_on_a_held_step_replays_it_when_the_holder_finishes,
            a_panicking_script_engine_fails_only_its_run,
            resume_waits_at_most_one_lease_ttl_for_a_live_owner,
            schema_output_is_validated_with_one_corrective_retry,
            deleting_a_finished_run_removes_everything_under_it,
            submitted_runs_are_executed_by_workers,
            submitting_twice_with_one_key_queues_one_run,
            failed_attempts_of_submitted_runs_are_retried,
            a_worker_shutting_down_hands_its_runs_back,
            cancel_reaches_a_run_on_a_worker,
            long_sleeps_park_runs_until_they_wake,
            runs_are_exact_through_retryable_store_faults,
            every_write_whose_answer_is_lost_is_recognised,
            a_terminal_store_fault_fails_the_run_clearly_and_resume_finishes_it,
        );
    };
}

fn builder(
    fixture: &Fixture,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> EngineBuilder {
    builder_on(Arc::clone(&fixture.store), scripts, provider)
}

fn builder_on(
    store: Arc<dyn DurableStore>,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> EngineBuilder {
    Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::clone(provider) as Arc<dyn smol_durable::AgentProvider>)
}

async fn step_states(store: &dyn DurableStore, run_id: &str, kind: StepKind) -> Vec<State> {
    store
        .load_steps(run_id)
        .await
        .expect("load_steps")
        .into_iter()
        .filter(|step| step.kind == kind)
        .map(|step| step.state)
        .collect()
}

async fn states(store: &dyn DurableStore, run_id: &str) -> (State, State, Vec<State>) {
    let run = store.get_run(run_id).await.expect("get_run").expect("run");
    let task = store
        .get_task(&run.task_id)
        .await
        .expect("get_task")
        .expect("task");
    let attempts = store.list_attempts(&run.task_id).await.expect("attempts");
    (
        run.state,
        task.state,
        attempts.into_iter().map(|a| a.state).collect(),
    )
}

async fn only_run(store: &dyn DurableStore) -> String {
    let runs = store.list_runs(&RunFilter::roots()).await.expect("list");
    assert_eq!(runs.len(), 1, "expected exactly one root run");
    runs[0].run_id.clone()
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

/// A per-call retry happens inside one claimed step: one workflow attempt, one completed step,
/// no failed step, and the failed try's usage is billed.
pub async fn runtime_retry_without_global_retry_bills_failed_tries(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let value = ctx
            .agent(
                "hello",
                json!({ "retry": { "maxAttempts": 2, "backoffMs": 0 } }),
            )
            .await?;
        Ok(json!({ "result": value }))
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_output("hello", json!("recovered: hello"))
            .fail_first(
                "hello",
                1,
                ProviderErrorKind::Transient,
                Some(Usage::tokens(2, 3)),
            ),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!({ "result": "recovered: hello" }));
    assert_eq!(provider.call_count(), 2);
    let store = fixture.store.as_ref();
    let (_, _, attempts) = states(store, &output.run_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        step_states(store, &output.run_id, StepKind::Agent).await,
        vec![State::Completed]
    );
    let steps = store.load_steps(&output.run_id).await.expect("steps");
    assert_eq!(steps[0].attempts, 1, "retries do not reclaim the step");
    let ledger = store.ledger_entries(&output.run_id).await.expect("ledger");
    let mut kinds: Vec<(&str, u64)> = ledger
        .iter()
        .map(|e| (e.source_type.as_str(), e.output_tokens))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec![("agent_attempt", 3), ("agent_step", 1)]);
    assert_eq!(output.token_usage.output_tokens, 4);
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

/// Resuming replays completed steps without calling the provider, with an edited workflow, and
/// opens attempt 2.
pub async fn resume_replays_without_calling_the_provider_again(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("hello", Value::Null).await?;
        Err(ScriptError::thrown("boom"))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let events = Arc::new(RecordingEventSink::new());
    let engine = builder(&fixture, &scripts, &provider)
        .event_sink(events.clone())
        .build()
        .expect("engine");
    engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect_err("first attempt fails");
    let run_id = only_run(fixture.store.as_ref()).await;
    // The script is fixed; the same path now returns the value.
    let scripts = scripts.workflow("main.mjs", |ctx| async move {
        let value = ctx.agent("hello", Value::Null).await?;
        Ok(json!({ "value": value }))
    });
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed run");
    assert_eq!(resumed.result, json!({ "value": "echo: hello" }));
    assert_eq!(resumed.attempt, 2);
    assert_eq!(
        provider.call_count(),
        1,
        "the completed agent step is replayed, not re-run"
    );
    assert!(events
        .events()
        .iter()
        .any(|e| e.event_type == EventType::StepReplayed));
    let (run, task, attempts) = states(fixture.store.as_ref(), &run_id).await;
    assert_eq!(
        (run, task, attempts),
        (
            State::Completed,
            State::Completed,
            vec![State::Failed, State::Completed]
        )
    );
    assert_eq!(
        fixture
            .store
            .ledger_entries(&run_id)
            .await
            .expect("ledger")
            .len(),
        1,
        "replays add no ledger rows"
    );
    drop(scripts);
}

/// Cancelling a running run ends it with `workflow cancelled` and marks attempt, run, task and
/// the in-flight step cancelled; the run can be resumed afterwards.
pub async fn cancellation_marks_attempt_run_and_task_cancelled(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(json!({ "result": ctx.agent("slow", Value::Null).await? }))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(30)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&engine, &scripts).await;
    let run_id = handle.run_id().to_owned();
    let cancelled = tokio::time::timeout(Duration::from_secs(10), async {
        handle.cancel();
        handle.join().await
    })
    .await
    .expect("cancellation must not wait for the 30 s call");
    let error = cancelled.expect_err("cancelled");
    assert_eq!(error.to_string(), "workflow cancelled");
    let store = fixture.store.as_ref();
    let (run, task, attempts) = states(store, &run_id).await;
    assert_eq!(
        (run, task, attempts),
        (State::Cancelled, State::Cancelled, vec![State::Cancelled])
    );
    assert_eq!(
        step_states(store, &run_id, StepKind::Agent).await,
        vec![State::Cancelled]
    );
    let stored = store.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(
        stored.failure_reason,
        Some(json!({ "message": "workflow cancelled" }))
    );
    // A cancelled step is never replayed as a success: resuming runs it again.
    let scripts = scripts.workflow("main.mjs", |ctx| async move {
        Ok(json!({ "result": ctx.agent("fast", Value::Null).await? }))
    });
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(resumed.result, json!({ "result": "echo: fast" }));
    drop(scripts);
}

/// A session sink that records, at save time, the state of the run and of the saved step.
#[derive(Debug)]
struct ProbeSink {
    store: Arc<dyn DurableStore>,
    seen: Mutex<Vec<(String, State, State)>>,
}

#[async_trait]
impl SessionLogSink for ProbeSink {
    async fn save(
        &self,
        _provider: &str,
        run_id: &str,
        step_id: &str,
        response: &AgentResponse,
    ) -> Result<(), BoxError> {
        assert!(
            response.raw.is_some(),
            "the sink receives the raw transcript"
        );
        let run = self.store.get_run(run_id).await?.ok_or("run missing")?;
        let step = self
            .store
            .load_steps(run_id)
            .await?
            .into_iter()
            .find(|step| step.step_id == step_id)
            .ok_or("step missing")?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((step_id.to_owned(), run.state, step.state));
        }
        Ok(())
    }
}

async fn session_export(
    fixture: Fixture,
    script: ScriptedEngine,
    provider: ScriptedProvider,
    cancel_on_call: bool,
) -> (
    Result<smol_durable::RunOutput, Error>,
    Vec<(String, State, State)>,
    State,
) {
    let sink = Arc::new(ProbeSink {
        store: Arc::clone(&fixture.store),
        seen: Mutex::new(Vec::new()),
    });
    let engine_slot: Arc<Mutex<Option<Engine>>> = Arc::new(Mutex::new(None));
    let provider = if cancel_on_call {
        let slot = Arc::clone(&engine_slot);
        provider.on_call(move |request| {
            let engine = slot.lock().ok().and_then(|engine| engine.clone());
            let run_id = request.run_id.clone();
            if let Some(engine) = engine {
                tokio::spawn(async move { engine.cancel(&run_id).await });
            }
        })
    } else {
        provider
    };
    let provider = Arc::new(provider);
    let limits = smol_durable::Limits {
        cancel_grace: Duration::from_millis(50),
        ..smol_durable::Limits::default()
    };
    let engine = builder(&fixture, &script, &provider)
        .session_log_sink(sink.clone())
        .limits(limits)
        .build()
        .expect("engine");
    if let Ok(mut slot) = engine_slot.lock() {
        *slot = Some(engine.clone());
    }
    let result = engine.run(script.source("main.mjs"), json!({})).await;
    let run_id = only_run(fixture.store.as_ref()).await;
    let final_state = fixture
        .store
        .get_run(&run_id)
        .await
        .expect("get")
        .expect("run")
        .state;
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    (result, seen, final_state)
}

/// The session-log sink receives the full result while the step is still `running` and the
/// run has not completed.
pub async fn session_is_exported_before_the_run_completes(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("before long sleep", Value::Null).await?;
        ctx.sleep(50).await?;
        Ok(json!({ "ok": true }))
    });
    let (result, seen, final_state) =
        session_export(fixture, scripts, ScriptedProvider::new("scripted"), false).await;
    assert_eq!(result.expect("run").result, json!({ "ok": true }));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].1.clone(), seen[0].2.clone()),
        (State::Running, State::Running)
    );
    assert_eq!(final_state, State::Completed);
}

/// The session is saved before a later throw marks the run failed.
pub async fn session_is_exported_before_the_run_fails(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("before failure", Value::Null).await?;
        Err(ScriptError::thrown("middle failure"))
    });
    let (result, seen, final_state) =
        session_export(fixture, scripts, ScriptedProvider::new("scripted"), false).await;
    assert!(result
        .expect_err("fails")
        .to_string()
        .contains("middle failure"));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, State::Running);
    assert_eq!(final_state, State::Failed);
}

/// With a session sink, a call in flight when the run is cancelled finishes and is saved (and
/// kept: it was paid for) before the run is marked cancelled.
pub async fn session_is_exported_before_the_run_is_cancelled(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(json!({ "result": ctx.agent("before cancel", Value::Null).await? }))
    });
    let store = Arc::clone(&fixture.store);
    let provider =
        ScriptedProvider::new("scripted").with_delay("before cancel", Duration::from_millis(100));
    let (result, seen, final_state) = session_export(fixture, scripts, provider, true).await;
    assert_eq!(
        result.expect_err("cancelled").to_string(),
        "workflow cancelled"
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, State::Running);
    assert_eq!(final_state, State::Cancelled);
    let run_id = only_run(store.as_ref()).await;
    assert_eq!(
        step_states(store.as_ref(), &run_id, StepKind::Agent).await,
        vec![State::Completed]
    );
    assert_eq!(
        store.ledger_entries(&run_id).await.expect("ledger").len(),
        1
    );
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

/// With 10 % of store operations failing retryably (half of them after the write committed,
/// the answer lost), the engine's retries make every run exactly what it is without faults:
/// same results, each agent step called once, one ledger row each, nothing left running.
pub async fn runs_are_exact_through_retryable_store_faults(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", |ctx| async move {
            let n = ctx.args()["n"].as_u64().unwrap_or(0);
            Ok(json!({ "child": ctx.agent(format!("child {n}"), Value::Null).await? }))
        })
        .workflow("flows/main.mjs", |ctx| async move {
            let id = ctx.args()["id"].as_u64().unwrap_or(0);
            let first = ctx.agent(format!("wf:{id}:first"), Value::Null).await?;
            let fan_out = ctx
                .parallel(
                    (0..3)
                        .map(|i| ctx.agent(format!("wf:{id}:part {i}"), Value::Null))
                        .collect(),
                )
                .await;
            ctx.sleep(5).await?;
            let child = ctx
                .workflow(json!({ "scriptPath": "./child.mjs" }), json!({ "n": id }))
                .await?;
            let last = ctx.agent(format!("wf:{id}:last"), Value::Null).await?;
            Ok(json!({ "first": first, "fanOut": fan_out, "child": child, "last": last }))
        });
    let faulty = Arc::new(FaultyStore::new(
        Arc::clone(&fixture.store),
        FaultPlan::retryable(7, 0.10),
    ));
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder_on(faulty.clone(), &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    let runs =
        (0..6u64).map(|id| engine.run(scripts.source("flows/main.mjs"), json!({ "id": id })));
    let outputs = futures::future::join_all(runs).await;
    for (id, output) in outputs.iter().enumerate() {
        let output = output
            .as_ref()
            .expect("every run completes despite the faults");
        assert_eq!(
            output.result,
            json!({
                "first": format!("echo: wf:{id}:first"),
                "fanOut": (0..3).map(|i| format!("echo: wf:{id}:part {i}")).collect::<Vec<_>>(),
                "child": { "child": format!("echo: child {id}") },
                "last": format!("echo: wf:{id}:last"),
            })
        );
        let ledger = fixture
            .store
            .ledger_entries(&output.run_id)
            .await
            .expect("ledger");
        assert_eq!(ledger.len(), 6, "one ledger row per agent step of run {id}");
    }
    // 6 runs × (5 agent steps + 1 in the child): each called exactly once.
    assert_eq!(provider.call_count(), 36, "no call was repeated by a retry");
    let running = RunFilter {
        states: vec![State::Running, State::Pending],
        ..RunFilter::default()
    };
    let unfinished = fixture.store.list_runs(&running).await.expect("list");
    assert!(
        unfinished.is_empty(),
        "runs left unfinished: {unfinished:#?}"
    );
    let counts = faulty.counts();
    assert!(
        counts.failed_after_commit > 0 && counts.failed_before > 0,
        "faults were injected: {counts:?}"
    );
}

/// Each write the engine makes, once committed with its answer lost (the connection dropped after
/// `COMMIT`), is recognised by the retry as the success it was: the run ends exactly as without
/// the fault — same result, each call made exactly as often, the same attempts, one ledger row
/// per agent step.
pub async fn every_write_whose_answer_is_lost_is_recognised(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", |ctx| async move {
            Ok(ctx.agent("c", Value::Null).await?)
        })
        .workflow("flows/main.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            // Fails once: the first attempt fails the step, the resume reclaims it.
            let b = ctx.agent("b", Value::Null).await?;
            let c = ctx
                .workflow(json!({ "scriptPath": "./child.mjs" }), json!({}))
                .await?;
            Ok(json!([a, b, c]))
        });
    for operation in [
        "create_run",
        "start_attempt",
        "insert_step",
        "complete_step",
        "fail_step",
        "finish_attempt",
        "claim_step",
        "create_child_run",
        "finish_child_run",
        "append_events",
        "put_script",
    ] {
        let faulty = Arc::new(FaultyStore::new(
            Arc::clone(&fixture.store),
            FaultPlan::none(),
        ));
        let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
            "b",
            1,
            ProviderErrorKind::Terminal,
            None,
        ));
        // A write not recognised as ours would leave a step "held by someone else" until its
        // lease ran out: short leases keep such a failure quick to see.
        let engine = builder_on(faulty.clone(), &scripts, &provider)
            .workflow("child", scripts.source("flows/child.mjs"))
            .lease_ttl(Duration::from_secs(2))
            .build()
            .expect("engine");
        faulty.fail_after_commit_once(operation);
        let handle = engine
            .start(RunRequest::new(scripts.source("flows/main.mjs"), json!({})))
            .await
            .unwrap_or_else(|error| panic!("{operation}: start: {error}"));
        let run_id = handle.run_id().to_owned();
        match handle.join().await {
            Err(Error::Script(_)) => {}
            other => panic!("{operation}: the first attempt fails on b's error, got {other:?}"),
        }
        let output = engine
            .resume(&run_id, ResumeOptions::new())
            .await
            .unwrap_or_else(|error| panic!("{operation}: resume: {error}"))
            .join()
            .await
            .unwrap_or_else(|error| panic!("{operation}: the resumed run completes: {error}"));
        assert!(faulty.armed().is_empty(), "{operation} was never called");
        assert_eq!(
            output.result,
            json!(["echo: a", "echo: b", "echo: c"]),
            "{operation}"
        );
        let calls = ["a", "b", "c"].map(|prompt| provider.calls_for(prompt));
        assert_eq!(calls, [1, 2, 1], "{operation}: calls of a, b, c");
        let store = fixture.store.as_ref();
        let (_, task, attempts) = states(store, &run_id).await;
        assert_eq!(task, State::Completed, "{operation}");
        assert_eq!(
            attempts,
            vec![State::Failed, State::Completed],
            "{operation}"
        );
        let ledger = store.ledger_entries(&run_id).await.expect("ledger");
        let steps = ledger
            .iter()
            .filter(|entry| entry.source_type == "agent_step")
            .count();
        assert_eq!(steps, 3, "{operation}: one ledger row per agent step");
        // a claimed once, b twice (failed, reclaimed): no claim was taken for someone else's.
        let mut fences: Vec<(String, u32)> = store
            .load_steps(&run_id)
            .await
            .expect("steps")
            .iter()
            .filter(|step| step.kind == StepKind::Agent)
            .map(|step| {
                (
                    step.input["prompt"].as_str().unwrap_or("").to_owned(),
                    step.attempts,
                )
            })
            .collect();
        fences.sort();
        assert_eq!(
            fences,
            vec![("a".to_owned(), 1), ("b".to_owned(), 2)],
            "{operation}: fences of a and b"
        );
        let events = store.read_events(&run_id, 0, 1_000).await.expect("events");
        assert!(
            events
                .iter()
                .all(|event| event.payload["adopted"] != json!(true)),
            "{operation}: our own completion was reported as another worker's"
        );
    }
}

/// A terminal store error (here: every operation fails while the agent call is in flight) fails
/// the run with an error naming the operation; nothing is half written, and a resume once the
/// store is healthy finishes the run.
pub async fn a_terminal_store_fault_fails_the_run_clearly_and_resume_finishes_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.agent("first", Value::Null).await?;
        let second = ctx.agent("second", Value::Null).await?;
        Ok(json!([first, second]))
    });
    let broken = Arc::new(FaultyStore::new(
        Arc::clone(&fixture.store),
        FaultPlan::terminal(1, 1.0),
    ));
    broken.set_enabled(false);
    let provider = Arc::new(
        ScriptedProvider::new("scripted").with_delay("second", Duration::from_millis(300)),
    );
    let engine = builder_on(broken.clone(), &scripts, &provider)
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    while provider.calls_for("second") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broken.set_enabled(true);
    let error = handle.join().await.expect_err("the store is broken");
    let message = error.to_string();
    assert!(
        matches!(&error, Error::Store(store) if !store.is_retryable()),
        "a terminal store error: {error:?}"
    );
    assert!(message.contains("injected terminal fault"), "{message}");
    broken.set_enabled(false);
    // Nothing half written: the first step stands, the second has no result and no bill.
    let steps = fixture.store.load_steps(&run_id).await.expect("steps");
    let completed = steps
        .iter()
        .filter(|step| step.state == State::Completed)
        .count();
    assert_eq!((steps.len(), completed), (2, 1), "{steps:#?}");
    assert!(steps
        .iter()
        .all(|step| step.state == State::Completed || step.result.is_none()));
    let ledger = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 1, "only the completed step is billed");
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume on a healthy store")
        .join()
        .await
        .expect("the resumed run completes");
    assert_eq!(resumed.result, json!(["echo: first", "echo: second"]));
    assert_eq!(provider.calls_for("first"), 1, "the completed step replays");
    let ledger = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 2);
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

/// With the allowance spent, the next `agent()` rejects with SPEC's message without calling
/// the provider; a resume with a larger allowance continues.
pub async fn budget_exhaustion_rejects_before_the_provider_is_called(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.agent("one", Value::Null).await?;
        let before = ctx.budget();
        let second = ctx.agent("two", Value::Null).await?;
        Ok(json!({ "first": first, "second": second, "spentBefore": before.spent, "remaining": before.remaining() }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let request = RunRequest::new(scripts.source("main.mjs"), json!({})).budget_total(4);
    let error = engine
        .start(request)
        .await
        .expect("start")
        .join()
        .await
        .expect_err("budget");
    assert_eq!(
        error.to_string(),
        "budget exhausted: spent 4 of 4 output tokens"
    );
    assert_eq!(provider.call_count(), 1);
    let run_id = only_run(fixture.store.as_ref()).await;
    assert_eq!(
        fixture
            .store
            .load_steps(&run_id)
            .await
            .expect("steps")
            .len(),
        1,
        "nothing was claimed for the rejected call"
    );
    let resumed = engine
        .resume(&run_id, ResumeOptions::new().budget_total(10))
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(resumed.result["second"], json!("echo: two"));
    assert_eq!(
        resumed.result["spentBefore"],
        json!(4),
        "spent is read from the ledger at attempt start"
    );
    assert_eq!(resumed.result["remaining"], json!(6));
    assert_eq!(provider.call_count(), 2);
}

/// `workflow(ref, args)` is a durable step with a child run; on resume a completed child is not
/// executed again, and its steps live under its own run id and scope.
pub async fn child_workflow_is_a_durable_step(fixture: Fixture) {
    let child_runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&child_runs);
    let failed_once = Arc::new(AtomicUsize::new(0));
    let fail = Arc::clone(&failed_once);
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", move |ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let n = ctx.args()["n"].as_u64().unwrap_or(0);
                let answer = ctx.agent("hello", Value::Null).await?;
                Ok(json!({ "n": n, "answer": answer }))
            }
        })
        .workflow("flows/main.mjs", move |ctx| {
            let fail = Arc::clone(&fail);
            async move {
                let parent = ctx.agent("hello", Value::Null).await?;
                let child = ctx
                    .workflow(json!({ "scriptPath": "./child.mjs" }), json!({ "n": 7 }))
                    .await?;
                if fail.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(ScriptError::thrown("fail after the child"));
                }
                Ok(json!({ "parent": parent, "child": child }))
            }
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    engine
        .run(scripts.source("flows/main.mjs"), json!({}))
        .await
        .expect_err("first attempt fails");
    let store = fixture.store.as_ref();
    let run_id = only_run(store).await;
    assert_eq!(
        provider.call_count(),
        2,
        "the same prompt in parent and child is two steps"
    );
    // Resumed by an engine that cannot resolve the child's path any more (its file is gone):
    // a completed child step replays without it.
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(
        resumed.result["child"],
        json!({ "n": 7, "answer": "echo: hello" })
    );
    assert_eq!(
        child_runs.load(Ordering::SeqCst),
        1,
        "a completed child is replayed, not executed"
    );
    assert_eq!(provider.call_count(), 2);
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    let child = all.iter().find(|run| !run.is_root()).expect("child run");
    assert_eq!(child.root_run_id, run_id);
    assert_eq!(child.parent_run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(child.state, State::Completed);
    let parent_steps = store.load_steps(&run_id).await.expect("steps");
    let workflow_step = parent_steps
        .iter()
        .find(|s| s.kind == StepKind::Workflow)
        .expect("workflow step");
    assert_eq!(
        child.parent_step_id.as_deref(),
        Some(workflow_step.step_id.as_str())
    );
    let child_steps = store.load_steps(&child.run_id).await.expect("child steps");
    assert_eq!(child_steps.len(), 1);
    assert!(child_steps[0].input_signature_json.contains(&format!(
        "\"workflowScope\":\"child:{}\"",
        workflow_step.checkpoint_name
    )));
    // Nesting limit and path confinement reject clearly.
    let escape = ScriptedEngine::new().workflow("flows/escape.mjs", |ctx| async move {
        Ok(ctx
            .workflow(json!({ "scriptPath": "../../etc/passwd" }), Value::Null)
            .await?)
    });
    let engine = builder(&fixture, &escape, &provider)
        .build()
        .expect("engine");
    let error = engine
        .run(escape.source("flows/escape.mjs"), json!({}))
        .await
        .expect_err("escape");
    assert!(
        error.to_string().contains("outside the workflow directory"),
        "{error}"
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
    match &error {
        Error::Script(script) => assert_eq!(script.kind(), smol_durable::ScriptErrorKind::Deadlock),
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

/// A cancellation recorded through another engine (another process, in effect) reaches the
/// executing one at its next heartbeat.
pub async fn cancellation_from_another_engine_is_noticed_by_heartbeat(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("slow", Value::Null).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(30)));
    let executing = builder(&fixture, &scripts, &provider)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .expect("engine");
    let other_store = fixture.another_handle().await;
    let other = Engine::builder()
        .store(other_store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(provider.clone())
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&executing, &scripts).await;
    other.cancel(handle.run_id()).await.expect("cancel");
    let error = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("noticed")
        .expect_err("cancelled");
    assert_eq!(error.to_string(), "workflow cancelled");
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

/// A call longer than the lease keeps its lease: the heartbeat renews it every ttl/3.
pub async fn heartbeat_keeps_a_long_call_leased(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("long", Value::Null).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("long", Duration::from_millis(900)));
    let engine = builder(&fixture, &scripts, &provider)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&engine, &scripts).await;
    let run_id = handle.run_id().to_owned();
    let store = fixture.another_handle().await;
    let first = store.load_steps(&run_id).await.expect("steps")[0]
        .lease_expires_at
        .expect("lease");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = store.load_steps(&run_id).await.expect("steps")[0].clone();
    assert_eq!(later.state, State::Running);
    assert!(
        later.lease_expires_at.expect("lease") > first,
        "the lease must have been renewed"
    );
    let now = smol_durable::Clock::now_ms(&smol_durable::SystemClock);
    assert!(
        later.lease_expires_at.expect("lease") > now,
        "a live owner's lease never lapses"
    );
    handle.join().await.expect("run");
    assert_eq!(provider.call_count(), 1);
}

/// Resuming a completed run returns the stored result and writes nothing.
pub async fn resuming_a_completed_run_changes_nothing(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let before = engine.status(&output.run_id).await.expect("status");
    let again = engine
        .resume(&output.run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("again");
    assert_eq!(again.result, output.result);
    assert_eq!(again.attempt, 1);
    assert_eq!(again.token_usage, output.token_usage);
    let after = engine.status(&output.run_id).await.expect("status");
    assert_eq!(after, before);
    assert_eq!(provider.call_count(), 1);
}

/// A local run of `main.mjs` (its script stored) whose first attempt `owner` started, leased
/// for `lease_ms` from now.
async fn run_held_by(
    store: &dyn DurableStore,
    scripts: &ScriptedEngine,
    owner: OwnerRecord,
    lease_ms: i64,
) -> smol_durable::store::CreatedRun {
    let source = scripts.source("main.mjs");
    store
        .put_script(&source.content_hash(), &source.text)
        .await
        .expect("script");
    let owner_id = owner.owner_id.clone();
    store.register_owner(owner).await.expect("owner");
    let mut workflow = WorkflowInfo::new();
    workflow.script_path = Some("main.mjs".into());
    workflow.script_hash = Some(source.content_hash());
    let now = smol_durable::Clock::now_ms(&smol_durable::SystemClock);
    let created = store
        .create_run(NewRun::new(
            ClaimScope::Local,
            &owner_id,
            workflow,
            json!({}),
            now,
        ))
        .await
        .expect("create");
    let started = store
        .start_attempt(StartAttempt {
            attempt_id: smol_durable::new_id("attempt"),
            task_id: created.task.task_id.clone(),
            run_id: created.run.run_id.clone(),
            owner_id,
            lease_expires_at: now + lease_ms,
            take_over_from: None,
            revive: false,
            now,
        })
        .await
        .expect("start");
    assert!(matches!(started, AttemptStart::Started(_)));
    created
}

/// A run left `running` by an owner whose process is gone (same host) is taken over at once,
/// without waiting for its 60 s leases.
pub async fn resume_takes_over_from_a_dead_owner_at_once(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    // A process that has exited: its pid is free.
    let mut dead = OwnerRecord::this_process("owner_dead".into(), 0);
    dead.pid = exited_pid();
    let created = run_held_by(store, &scripts, dead, 60_000).await;
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let resumed = tokio::time::timeout(Duration::from_secs(10), async {
        engine
            .resume(&created.run.run_id, ResumeOptions::new().no_wait())
            .await
            .expect("resume")
            .join()
            .await
    })
    .await
    .expect("no waiting for the dead owner's lease")
    .expect("resumed");
    assert_eq!(resumed.attempt, 2);
    assert_eq!(resumed.result, json!("echo: hello"));
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

/// Starts `main.mjs` and returns once its first agent call has started.
async fn start_until_agent_runs(
    engine: &Engine,
    scripts: &ScriptedEngine,
) -> smol_durable::RunHandle {
    let mut handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let mut events = handle.events().expect("events");
    while let Some(event) = events.recv().await {
        if event.event_type == EventType::AgentStarted {
            break;
        }
    }
    handle
}

async fn wait_for_steps(
    store: &dyn DurableStore,
    run_id: &str,
    count: usize,
) -> Vec<smol_durable::store::StepRecord> {
    for _ in 0..1_000 {
        let steps = store.load_steps(run_id).await.expect("steps");
        if steps.len() >= count {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("run {run_id} never reached {count} steps");
}

/// A one-hour sleep completes as soon as the engine's clock passes its `wakeAt`: sleeps and
/// leases follow the [`Clock`](smol_durable::Clock), so tests never wait for real time.
pub async fn sleep_waits_on_the_engine_clock(fixture: Fixture) {
    let clock = smol_durable::ManualClock::new(1_000_000);
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

/// An agent step held under a live lease by another worker is waited for (the provider is not
/// called), then reclaimed with `attempts = 2` once the lease expires.
pub async fn a_step_held_by_a_dead_worker_is_reclaimed_when_its_lease_expires(fixture: Fixture) {
    let clock = smol_durable::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(1).await?;
        Ok(ctx.agent("hello", Value::Null).await?)
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
    let run_id = handle.run_id().to_owned();
    let (signature, _) = hold_the_next_step_elsewhere(fixture.store.as_ref(), &run_id).await;
    clock.advance(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        provider.call_count(),
        0,
        "a live lease is waited for, never run over"
    );
    clock.advance(Duration::from_millis(60_000));
    let output = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("reclaimed after expiry")
        .expect("run");
    assert_eq!(output.result, json!("echo: hello"));
    assert_eq!(provider.call_count(), 1);
    let step = fixture
        .store
        .get_step(&run_id, &signature.base_checkpoint())
        .await
        .expect("get")
        .expect("row");
    assert_eq!((step.state, step.attempts), (State::Completed, 2));
}

/// A call that finds its step held by another live worker waits, then replays the holder's
/// result (never running the call itself). A store that notifies wakes the waiter when the
/// holder finishes, with no poll at all (the engine's clock never moves); others are seen at
/// the next poll.
pub async fn a_caller_waiting_on_a_held_step_replays_it_when_the_holder_finishes(fixture: Fixture) {
    let clock = smol_durable::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(1).await?;
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let limits = smol_durable::Limits {
        wait_poll: Duration::from_secs(30),
        ..smol_durable::Limits::default()
    };
    let engine = builder(&fixture, &scripts, &provider)
        .clock(Arc::new(clock.clone()))
        .limits(limits)
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    let (_, held) = hold_the_next_step_elsewhere(fixture.store.as_ref(), &run_id).await;
    clock.advance(Duration::from_millis(1));
    // The script reaches the held step and starts waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(provider.call_count(), 0, "a live lease is waited for");
    let elsewhere = fixture.another_handle().await;
    let finished = elsewhere
        .complete_step(smol_durable::store::CompleteStep {
            step_id: held.step_id.clone(),
            fence: held.attempts,
            result: json!({ "output": "answered elsewhere" }),
            ledger: Vec::new(),
            now: 1_000_002,
        })
        .await
        .expect("complete");
    assert!(matches!(finished, smol_durable::store::StepCas::Applied(_)));
    if !fixture.store.capabilities().notify {
        clock.advance(Duration::from_secs(30));
    }
    let output = tokio::time::timeout(Duration::from_secs(5), handle.join())
        .await
        .expect("the waiter was woken")
        .expect("run");
    assert_eq!(output.result, json!("answered elsewhere"));
    assert_eq!(provider.call_count(), 0, "replayed, never run");
}

/// Once the run (sleeping at `1_000_000` on a manual clock) has stored its first step, another
/// worker takes the `agent("hello")` step it makes next, with a lease until `1_060_000`.
async fn hold_the_next_step_elsewhere(
    store: &dyn DurableStore,
    run_id: &str,
) -> (smol_durable::StepSignature, smol_durable::store::StepRecord) {
    wait_for_steps(store, run_id, 1).await;
    let signature =
        smol_durable::StepSignature::agent("root", "scripted", "hello", &Value::Null, None, None);
    let held = store
        .insert_step(NewStep {
            step_id: smol_durable::new_id("step"),
            run_id: run_id.to_owned(),
            root_run_id: run_id.to_owned(),
            kind: StepKind::Agent,
            checkpoint_name: signature.base_checkpoint(),
            input_signature_hash: signature.hash.clone(),
            input_signature_json: signature.json.clone(),
            input: json!({ "prompt": "hello" }),
            worker_id: "owner_elsewhere".into(),
            lease_expires_at: 1_060_000,
            now: 1_000_000,
        })
        .await
        .expect("insert");
    let InsertStep::Inserted(held) = held else {
        panic!("the step was free")
    };
    (signature, held)
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

/// A resume facing another live owner waits at most one lease ttl, then reports `RunBusy`.
pub async fn resume_waits_at_most_one_lease_ttl_for_a_live_owner(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let scripts = ScriptedEngine::new().workflow("main.mjs", |_ctx| async move { Ok(json!(1)) });
    // An owner in this very process: alive as far as anyone can tell.
    let alive = OwnerRecord::this_process("owner_alive".into(), 0);
    let created = run_held_by(store, &scripts, alive, 600_000).await;
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .expect("engine");
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        engine.resume(&created.run.run_id, ResumeOptions::new()),
    )
    .await
    .expect("bounded wait")
    .expect_err("busy");
    assert!(matches!(error, Error::RunBusy { .. }), "{error:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it did wait"
    );
    let again = engine
        .resume(&created.run.run_id, ResumeOptions::new())
        .await;
    assert!(
        matches!(again, Err(Error::RunBusy { .. })),
        "the run stays claimable later"
    );
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
        .filter(|e| e.source_type == "agent_attempt")
        .count();
    let steps = ledger
        .iter()
        .filter(|e| e.source_type == "agent_step")
        .count();
    assert_eq!((attempts, steps), (3, 2), "rejected answers are billed too");
    let states = step_states(fixture.store.as_ref(), &output.run_id, StepKind::Agent).await;
    assert_eq!(states.iter().filter(|s| **s == State::Failed).count(), 1);
}

fn exited_pid() -> u32 {
    let child = std::process::Command::new("true").spawn();
    match child {
        Ok(mut child) => {
            let pid = child.id();
            let _ = child.wait();
            pid
        }
        Err(_) => u32::MAX - 1,
    }
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
    assert_eq!(error.kind(), smol_durable::StoreErrorKind::Conflict);
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

/// Polls until the run reaches a terminal state (or `limit` passes) and returns that state.
async fn wait_until_finished(store: &dyn DurableStore, run_id: &str, limit: Duration) -> State {
    let started = std::time::Instant::now();
    loop {
        let run = store.get_run(run_id).await.expect("get_run").expect("run");
        if run.state.is_terminal() || started.elapsed() > limit {
            return run.state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast_worker() -> WorkerOptions {
    WorkerOptions::new()
        .concurrency(2)
        .poll_interval(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(1))
}

/// Submits one run of `main.mjs` and starts a worker, returning once its `slow` call runs.
async fn submit_until_slow_call_runs(
    engine: &Engine,
    scripts: &ScriptedEngine,
    provider: &ScriptedProvider,
    options: WorkerOptions,
) -> (smol_durable::SubmittedRun, smol_durable::Worker) {
    let run = engine
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({})),
            SubmitOptions::new(),
        )
        .await
        .expect("submit");
    let worker = engine.worker(options);
    let started = std::time::Instant::now();
    while provider.calls_for("slow") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow call never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (run, worker)
}

/// `submit` only queues (the submitting engine calls no provider); a worker on another handle
/// runs every submitted run to completion from the stored script.
pub async fn submitted_runs_are_executed_by_workers(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let name = ctx.args()["name"].clone();
        let first = ctx.agent(format!("hello {name}"), Value::Null).await?;
        let second = ctx.agent(format!("bye {name}"), Value::Null).await?;
        Ok(json!([first, second]))
    });
    let submitter_provider = Arc::new(ScriptedProvider::new("scripted"));
    let submitter = builder(&fixture, &scripts, &submitter_provider)
        .build()
        .expect("engine");
    let mut submitted = Vec::new();
    for i in 0..3 {
        let request = RunRequest::new(scripts.source("main.mjs"), json!({ "name": i }));
        let run = submitter
            .submit(request, SubmitOptions::new())
            .await
            .expect("submit");
        assert_eq!(run.state, State::Pending);
        assert!(run.created);
        submitted.push(run);
    }
    let worker_provider = Arc::new(ScriptedProvider::new("scripted"));
    let worker_engine = builder_on(fixture.another_handle().await, &scripts, &worker_provider)
        .build()
        .expect("engine");
    let worker = worker_engine.worker(fast_worker());
    for run in &submitted {
        let state =
            wait_until_finished(fixture.store.as_ref(), &run.run_id, Duration::from_secs(20)).await;
        assert_eq!(state, State::Completed, "run {}", run.run_id);
        let stored = fixture
            .store
            .get_run(&run.run_id)
            .await
            .expect("get_run")
            .expect("run");
        let name = stored.args["name"].clone();
        assert_eq!(
            stored.completed_payload,
            Some(json!([
                format!("echo: hello {name}"),
                format!("echo: bye {name}")
            ]))
        );
        let task = fixture
            .store
            .get_task(&run.task_id)
            .await
            .expect("get_task")
            .expect("task");
        assert_eq!(task.claim_scope, ClaimScope::Runner);
        assert_eq!(task.max_attempts, 3);
    }
    worker.shutdown();
    let report = worker.join().await.expect("worker");
    assert_eq!((report.claimed, report.completed), (3, 3));
    assert_eq!(
        submitter_provider.call_count(),
        0,
        "submitting runs nothing"
    );
    assert_eq!(worker_provider.call_count(), 6);
    let status = submitter
        .status(&submitted[0].task_id)
        .await
        .expect("status by task id");
    assert_eq!(status.run.run_id, submitted[0].run_id);
    assert_eq!(status.attempts.len(), 1);
}

/// The same idempotency key twice returns the first run and queues nothing new.
pub async fn submitting_twice_with_one_key_queues_one_run(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |_ctx| async move { Ok(json!(1)) });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let submit = |key: &str| {
        engine.submit(
            RunRequest::new(scripts.source("main.mjs"), json!({})),
            SubmitOptions::new().idempotency_key(key).max_attempts(5),
        )
    };
    let first = submit("order-42").await.expect("submit");
    let again = submit("order-42").await.expect("submit again");
    let other = submit("order-43").await.expect("submit another");
    assert!(first.created && !again.created && other.created);
    assert_eq!(
        (&again.task_id, &again.run_id),
        (&first.task_id, &first.run_id)
    );
    assert_ne!(other.run_id, first.run_id);
    let runs = fixture
        .store
        .list_runs(&RunFilter::roots())
        .await
        .expect("list");
    assert_eq!(runs.len(), 2);
}

/// A failed attempt returns the task to `pending` with backoff; the next attempt replays what
/// completed, and a run that keeps failing ends `failed` after `max_attempts`.
pub async fn failed_attempts_of_submitted_runs_are_retried(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.agent("stable", Value::Null).await?;
        let second = ctx
            .agent(ctx.args()["flaky"].as_str().unwrap_or("x"), Value::Null)
            .await?;
        Ok(json!([first, second]))
    });
    // "flaky once" fails the first attempt; "always" fails every attempt.
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("flaky once", 1, ProviderErrorKind::Terminal, None)
            .fail_first("always", 100, ProviderErrorKind::Terminal, None),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let recovers = engine
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({ "flaky": "flaky once" })),
            SubmitOptions::new().max_attempts(3),
        )
        .await
        .expect("submit");
    let gives_up = engine
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({ "flaky": "always" })),
            SubmitOptions::new().max_attempts(2),
        )
        .await
        .expect("submit");
    let worker = engine.worker(fast_worker());
    let store = fixture.store.as_ref();
    let limit = Duration::from_secs(20);
    let state = wait_until_finished(store, &recovers.run_id, limit).await;
    let attempts = store
        .list_attempts(&recovers.task_id)
        .await
        .expect("attempts");
    assert_eq!(state, State::Completed, "attempts: {attempts:#?}");
    assert_eq!(
        wait_until_finished(store, &gives_up.run_id, limit).await,
        State::Failed
    );
    worker.shutdown();
    worker.join().await.expect("worker");
    let (_, _, attempts) = states(store, &recovers.run_id).await;
    let records = store
        .list_attempts(&recovers.task_id)
        .await
        .expect("attempts");
    assert_eq!(
        attempts,
        vec![State::Failed, State::Completed],
        "{records:#?}"
    );
    let (_, task, attempts) = states(store, &gives_up.run_id).await;
    assert_eq!(task, State::Failed);
    assert_eq!(
        attempts,
        vec![State::Failed, State::Failed],
        "max_attempts = 2"
    );
    assert_eq!(
        provider.calls_for("stable"),
        2,
        "the completed step replays on retries"
    );
    assert_eq!(provider.calls_for("always"), 2);
}

/// On shutdown, a run still in flight after the grace period is handed back: its task is
/// `pending` again at once and another worker finishes it, reclaiming the interrupted step
/// without waiting for its lease.
pub async fn a_worker_shutting_down_hands_its_runs_back(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let quick = ctx.agent("quick", Value::Null).await?;
        let slow = ctx.agent("slow", Value::Null).await?;
        Ok(json!([quick, slow]))
    });
    let stuck =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(3600)));
    let engine = builder(&fixture, &scripts, &stuck)
        .lease_ttl(Duration::from_secs(3600))
        .build()
        .expect("engine");
    let (run, worker) = submit_until_slow_call_runs(
        &engine,
        &scripts,
        &stuck,
        fast_worker().shutdown_grace(Duration::from_millis(50)),
    )
    .await;
    worker.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(20), worker.join())
        .await
        .expect("shutdown is bounded by the grace period")
        .expect("worker");
    assert_eq!((report.claimed, report.released), (1, 1));
    let task = fixture
        .store
        .get_task(&run.task_id)
        .await
        .expect("get_task")
        .expect("task");
    assert_eq!(task.state, State::Pending, "handed back, not failed");
    assert_eq!(task.claimed_by_owner_id, None);
    let quick_provider = Arc::new(ScriptedProvider::new("scripted"));
    let successor = builder_on(fixture.another_handle().await, &scripts, &quick_provider)
        .lease_ttl(Duration::from_secs(3600))
        .build()
        .expect("engine");
    let worker = successor.worker(fast_worker());
    assert_eq!(
        wait_until_finished(fixture.store.as_ref(), &run.run_id, Duration::from_secs(20)).await,
        State::Completed,
        "the next worker continues at once, despite the hour-long leases"
    );
    worker.shutdown();
    worker.join().await.expect("worker");
    assert_eq!(quick_provider.calls_for("quick"), 0, "replayed");
    assert_eq!(quick_provider.calls_for("slow"), 1);
}

/// `cancel` from another engine stops a run a worker is executing, within one heartbeat.
pub async fn cancel_reaches_a_run_on_a_worker(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("slow", Value::Null).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(3600)));
    let worker_engine = builder(&fixture, &scripts, &provider)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .expect("engine");
    let (run, worker) =
        submit_until_slow_call_runs(&worker_engine, &scripts, &provider, fast_worker()).await;
    let other = builder_on(fixture.another_handle().await, &scripts, &provider)
        .build()
        .expect("engine");
    other.cancel(&run.run_id).await.expect("cancel");
    assert_eq!(
        wait_until_finished(fixture.store.as_ref(), &run.run_id, Duration::from_secs(10)).await,
        State::Cancelled
    );
    worker.shutdown();
    let report = worker.join().await.expect("worker");
    assert_eq!(report.cancelled, 1);
    let (_, task, attempts) = states(fixture.store.as_ref(), &run.run_id).await;
    assert_eq!((task, attempts), (State::Cancelled, vec![State::Cancelled]));
}

/// A worker parks a run whose only outstanding work is a long sleep: the task goes back to
/// the queue until `wakeAt` and the worker's slot is free, so six sleeping runs fit a worker of
/// two slots. After the sleep, any worker resumes each by replay; nothing runs twice.
pub async fn long_sleeps_park_runs_until_they_wake(fixture: Fixture) {
    let clock = smol_durable::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let before = ctx.agent("before", Value::Null).await?;
        ctx.sleep(60_000).await?;
        let after = ctx.agent("after", Value::Null).await?;
        Ok(json!([before, after]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("engine");
    let mut runs = Vec::new();
    for n in 0..6 {
        let request = RunRequest::new(scripts.source("main.mjs"), json!({ "n": n }));
        runs.push(
            engine
                .submit(request, SubmitOptions::new())
                .await
                .expect("submit"),
        );
    }
    let worker = engine.worker(fast_worker().park_after(Some(Duration::from_secs(30))));
    let store = fixture.store.as_ref();
    let started = std::time::Instant::now();
    loop {
        let mut parked = 0;
        for run in &runs {
            let task = store
                .get_task(&run.task_id)
                .await
                .expect("get_task")
                .expect("task");
            if task.state == State::Pending && task.not_before == Some(1_060_000) {
                parked += 1;
            }
        }
        if parked == runs.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {parked} of {} runs parked",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(provider.calls_for("before"), 6);
    assert_eq!(provider.calls_for("after"), 0);
    clock.advance(Duration::from_secs(60));
    for run in &runs {
        assert_eq!(
            wait_until_finished(store, &run.run_id, Duration::from_secs(20)).await,
            State::Completed
        );
        let (_, _, attempts) = states(store, &run.run_id).await;
        assert_eq!(
            attempts,
            vec![State::Cancelled, State::Completed],
            "parked once, then completed"
        );
    }
    worker.shutdown();
    let report = worker.join().await.expect("worker");
    assert_eq!((report.parked, report.completed), (6, 6));
    assert_eq!(provider.calls_for("before"), 6, "replayed after parking");
    assert_eq!(provider.calls_for("after"), 6);
}
