//! Waits and signals: the mailbox, registration order, `waitForAny`, deadlines, cancellation,
//! changed options, schemas, script-sent signals, parking, and timeouts racing signals.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use smol_durable_core::store::{SignalState, StepRecord, WaitFilter};
use smol_durable_core::{HostErrorKind, SignalOptions};

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_waits_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::waits,
            $factory,
            a_signal_sent_before_the_wait_is_kept_for_it,
            a_waiting_run_continues_when_signalled,
            an_idempotency_key_makes_a_send_safe_to_repeat,
            signals_to_unknown_or_finished_runs_are_refused,
            two_waits_on_one_name_are_served_in_call_order,
            signals_sent_early_go_to_concurrent_waits_in_call_order,
            a_signal_racing_the_parking_of_its_run_always_wakes_it,
            wait_for_any_takes_one_name_and_leaves_the_rest,
            a_passed_deadline_times_out_once_and_for_all,
            a_cancelled_wait_waits_again_on_resume_until_the_same_deadline,
            a_wait_whose_options_changed_keeps_its_step_and_deadline,
            invalid_payloads_are_refused_at_send_and_rejected_at_consumption,
            a_script_signal_is_sent_once_across_replays,
            a_parked_waiting_run_continues_when_signalled_through_another_handle,
            a_run_started_to_detach_stops_at_its_wait_and_a_worker_continues_it,
            a_parked_child_run_takes_a_signal_sent_to_it,
            timeouts_racing_signals_lose_nothing_and_deliver_nothing_twice
        );
    };
}

/// The open waits of a run, once `count` of them are open (polling the store).
async fn open_waits(
    engine: &Engine,
    run_id: &str,
    count: usize,
) -> Vec<smol_durable_core::OpenWait> {
    let filter = WaitFilter {
        run_id: Some(run_id.to_owned()),
        ..WaitFilter::default()
    };
    let started = std::time::Instant::now();
    loop {
        let waits = engine.waits(&filter).await.expect("waits");
        let running = wait_steps(engine.store().as_ref(), run_id)
            .await
            .iter()
            .filter(|step| step.state == State::Running)
            .count();
        if waits.len() >= count && running >= count {
            return waits;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run {run_id} never had {count} open waits (has {})",
            waits.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The open wait of a run on `name`, once it is open and held.
async fn open_wait_on(engine: &Engine, run_id: &str, name: &str) -> smol_durable_core::OpenWait {
    let started = std::time::Instant::now();
    loop {
        let waits = open_waits(engine, run_id, 1).await;
        if let Some(wait) = waits
            .into_iter()
            .find(|wait| wait.names.iter().any(|n| n == name))
        {
            let steps = wait_steps(engine.store().as_ref(), run_id).await;
            if steps
                .iter()
                .any(|step| step.step_id == wait.step_id && step.state == State::Running)
            {
                return wait;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run {run_id} never waited on {name}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_steps(store: &dyn DurableStore, run_id: &str) -> Vec<StepRecord> {
    store
        .load_steps(run_id)
        .await
        .expect("steps")
        .into_iter()
        .filter(|step| step.kind == StepKind::Wait)
        .collect()
}

async fn send(
    engine: &Engine,
    run_id: &str,
    name: &str,
    payload: Value,
) -> smol_durable_core::SignalReceipt {
    engine
        .signal(run_id, name, payload, SignalOptions::default())
        .await
        .expect("signal")
}

async fn join(handle: smol_durable_core::RunHandle) -> Value {
    tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the run must finish")
        .expect("the run must complete")
        .result
}

fn engine_for(
    fixture: &Fixture,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> Engine {
    builder(fixture, scripts, provider).build().expect("engine")
}

/// Starts `main.mjs` locally; its handle and run id.
async fn start_main(
    engine: &Engine,
    scripts: &ScriptedEngine,
) -> (smol_durable_core::RunHandle, String) {
    let handle = engine
        .start(start_request(scripts, json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    (handle, run_id)
}

fn start_request(scripts: &ScriptedEngine, args: Value) -> RunRequest {
    RunRequest::new(scripts.source("main.mjs"), args)
}

/// A signal sent before the run waits is kept in its mailbox; the wait takes it, and the
/// signal records which step consumed it.
pub async fn a_signal_sent_before_the_wait_is_kept_for_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.agent("first", Value::Null).await?;
        let value = ctx.wait_for("go", Value::Null).await?;
        Ok(json!({ "first": first, "value": value }))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("first", Duration::from_millis(300)));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let receipt = send(&engine, &run_id, "go", json!({ "n": 1 })).await;
    assert!(!receipt.delivered, "no wait was open yet");
    assert!(!receipt.duplicate);
    assert_eq!(
        join(handle).await,
        json!({ "first": "echo: first", "value": { "n": 1 } })
    );
    let store = fixture.store.as_ref();
    let signals = store.list_signals(&run_id).await.expect("signals");
    let waits = wait_steps(store, &run_id).await;
    assert_eq!((signals.len(), waits.len()), (1, 1));
    assert_eq!(signals[0].state, SignalState::Consumed);
    assert_eq!(
        signals[0].step_id.as_deref(),
        Some(waits[0].step_id.as_str())
    );
    assert_eq!(
        waits[0].result,
        Some(json!({
            "outcome": "received",
            "name": "go",
            "signalId": receipt.signal_id,
            "value": { "n": 1 },
        }))
    );
}

/// A run waiting when the signal arrives continues at once; `waits` lists the wait with its
/// description while it is open, and the run's events tell the story.
pub async fn a_waiting_run_continues_when_signalled(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let answer = ctx
            .wait_for("approval", json!({ "description": "Approve the plan?" }))
            .await?;
        Ok(json!({ "approved": answer }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let waits = open_waits(&engine, &run_id, 1).await;
    assert_eq!(waits[0].names, vec!["approval".to_owned()]);
    assert_eq!(waits[0].description.as_deref(), Some("Approve the plan?"));
    assert_eq!(waits[0].deadline, None, "no timeout: waits without limit");
    assert_eq!(waits[0].run_id, run_id);
    let receipt = send(&engine, &run_id, "approval", json!(true)).await;
    assert!(receipt.delivered, "a wait was open for it");
    assert_eq!(join(handle).await, json!({ "approved": true }));
    let filter = WaitFilter {
        run_id: Some(run_id.clone()),
        ..WaitFilter::default()
    };
    assert!(engine.waits(&filter).await.expect("waits").is_empty());
    let events = engine.events(&run_id, 0, 1_000).await.expect("events");
    let types: Vec<&str> = events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    for expected in [
        "workflow.wait_started",
        "workflow.signal_received",
        "workflow.wait_completed",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let completed = events
        .iter()
        .find(|event| event.typed() == Some(EventType::WaitCompleted))
        .expect("wait_completed");
    assert_eq!(completed.payload["data"]["outcome"], json!("received"));
}

/// With an idempotency key, sending again stores nothing and answers the first receipt.
pub async fn an_idempotency_key_makes_a_send_safe_to_repeat(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.wait_for("go", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    open_waits(&engine, &run_id, 1).await;
    let keyed = || SignalOptions::default().idempotency_key("note-1");
    let first = engine
        .signal(&run_id, "note", json!(1), keyed())
        .await
        .expect("first");
    let again = engine
        .signal(&run_id, "note", json!(2), keyed())
        .await
        .expect("again");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.signal_id, first.signal_id);
    let store = fixture.store.as_ref();
    let notes: Vec<_> = store
        .list_signals(&run_id)
        .await
        .expect("signals")
        .into_iter()
        .filter(|signal| signal.name == "note")
        .collect();
    assert_eq!(notes.len(), 1, "the repeat stored nothing");
    assert_eq!(notes[0].payload, json!(1));
    assert_eq!(notes[0].state, SignalState::Pending, "nobody waits for it");
    send(&engine, &run_id, "go", json!("done")).await;
    assert_eq!(join(handle).await, json!("done"));
}

/// Signals to a run that does not exist or has finished are refused with clear errors.
pub async fn signals_to_unknown_or_finished_runs_are_refused(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("hi", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let unknown = engine
        .signal("run_missing", "go", json!(1), SignalOptions::default())
        .await
        .expect_err("unknown run");
    assert!(matches!(unknown, Error::RunNotFound { .. }), "{unknown:?}");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let finished = engine
        .signal(&output.run_id, "go", json!(1), SignalOptions::default())
        .await
        .expect_err("finished run");
    assert!(
        matches!(finished, Error::InvalidState { .. }),
        "{finished:?}"
    );
    assert!(finished.to_string().contains("is completed"), "{finished}");
    let bad_name = engine
        .signal(
            &output.run_id,
            "no spaces",
            json!(1),
            SignalOptions::default(),
        )
        .await
        .expect_err("bad name");
    assert!(
        bad_name.to_string().contains("not a signal name"),
        "{bad_name}"
    );
    let store = fixture.store.as_ref();
    assert!(store
        .list_signals(&output.run_id)
        .await
        .expect("signals")
        .is_empty());
}

/// Two waits on one name are served in the order the script made them; signals oldest first.
pub async fn two_waits_on_one_name_are_served_in_call_order(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let (first, second) = futures::join!(
            ctx.wait_for("x", json!({ "description": "first" })),
            ctx.wait_for("x", json!({ "description": "second" }))
        );
        let third = ctx.wait_for("x", Value::Null).await?;
        Ok(json!([first?, second?, third]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    open_waits(&engine, &run_id, 2).await;
    for n in 1..=3 {
        send(&engine, &run_id, "x", json!(n)).await;
    }
    assert_eq!(join(handle).await, json!([1, 2, 3]));
}

/// Signals already in the mailbox go to concurrent waits on their name in the order the
/// script made the calls, however their claims interleave.
pub async fn signals_sent_early_go_to_concurrent_waits_in_call_order(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("first", Value::Null).await?;
        let waits = (0..4).map(|n| ctx.wait_for("x", json!({ "description": format!("{n}") })));
        let got = futures::future::join_all(waits).await;
        Ok(json!(got.into_iter().collect::<Result<Vec<_>, _>>()?))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("first", Duration::from_millis(200)));
    let engine = engine_for(&fixture, &scripts, &provider);
    for _ in 0..3 {
        let handle = engine
            .start(start_request(&scripts, json!({})))
            .await
            .expect("start");
        let run_id = handle.run_id().to_owned();
        for n in 0..4 {
            send(&engine, &run_id, "x", json!(n)).await;
        }
        assert_eq!(join(handle).await, json!([0, 1, 2, 3]));
    }
}

/// A signal sent at any moment around its run being parked (before, while the attempt ends,
/// after) wakes it: a worker always continues the run.
pub async fn a_signal_racing_the_parking_of_its_run_always_wakes_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.wait_for("go", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    // The worker's store operations are slowed down, its end of an attempt included, so
    // signals land while a parking attempt is ending, when the task is still running.
    let slow = FaultPlan {
        delay_rate: 1.0,
        max_delay: Duration::from_millis(40),
        ..FaultPlan::none()
    };
    let slow_store: Arc<dyn DurableStore> =
        Arc::new(FaultyStore::new(Arc::clone(&fixture.store), slow));
    let engine = builder_on(slow_store, &scripts, &provider)
        .build()
        .expect("engine");
    let sender = builder(&fixture, &scripts, &provider)
        .build()
        .expect("sender");
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(4)
            .poll_interval(Duration::from_millis(20))
            .park_after(Some(Duration::ZERO)),
    );
    let store = fixture.store.as_ref();
    for round in 0..16u64 {
        let submitted = sender
            .submit(start_request(&scripts, json!({})), SubmitOptions::new())
            .await
            .expect("submit");
        // Parking settles for 100 ms after the wait starts: land before, in and after it.
        tokio::time::sleep(Duration::from_millis(100 + round * 10)).await;
        send(&sender, &submitted.run_id, "go", json!(round)).await;
        let run = finished(store, &submitted.run_id).await;
        assert_eq!(run.result(), Some(&json!(round)), "round {round}");
    }
    worker.shutdown();
    worker.join().await.expect("worker");
}

/// `waitForAny` is one step that answers `{name, value}` for the first of its names; a
/// signal of another of its names stays in the mailbox for a later wait.
pub async fn wait_for_any_takes_one_name_and_leaves_the_rest(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.wait_for_any(&["b", "a"], Value::Null).await?;
        let second = ctx.wait_for("a", Value::Null).await?;
        Ok(json!([first, second]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    open_waits(&engine, &run_id, 1).await;
    send(&engine, &run_id, "b", json!("bee")).await;
    send(&engine, &run_id, "a", json!("ay")).await;
    assert_eq!(
        join(handle).await,
        json!([{ "name": "b", "value": "bee" }, "ay"])
    );
    let waits = wait_steps(fixture.store.as_ref(), &run_id).await;
    assert_eq!(waits.len(), 2, "waitForAny is one step");
    // Both steps may be created in one millisecond: found by signature, not by position.
    assert!(
        waits
            .iter()
            .any(|wait| wait.input_signature_json.contains(r#""names":["a","b"]"#)),
        "names sorted in the identity: {waits:?}"
    );
}

/// A deadline that passes rejects with a `WaitTimeout` error (or answers `default`), and the
/// step records it: a replay answers the same even when a matching signal has arrived since.
pub async fn a_passed_deadline_times_out_once_and_for_all(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = match ctx.wait_for("never", json!({ "timeoutMs": 30 })).await {
            Ok(value) => json!({ "received": value }),
            Err(error) if error.kind == HostErrorKind::WaitTimeout => {
                json!({ "timedOut": error.message })
            }
            Err(error) => return Err(error.into()),
        };
        let second = ctx
            .wait_for(
                "never",
                json!({ "timeoutMs": 30, "default": { "fallback": true } }),
            )
            .await?;
        let last = ctx.wait_for("hold", Value::Null).await?;
        Ok(json!([first, second, last]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    open_wait_on(&engine, &run_id, "hold").await;
    let store = fixture.store.as_ref();
    let waits = wait_steps(store, &run_id).await;
    assert_eq!(waits.len(), 3);
    for wait in &waits[..2] {
        assert_eq!(wait.state, State::Completed);
        assert_eq!(
            wait.result.as_ref().map(|r| &r["outcome"]),
            Some(&json!("timedOut"))
        );
    }
    // A signal arriving after the deadlines does not change what those waits answered.
    send(&engine, &run_id, "never", json!("late")).await;
    handle.cancel();
    handle.join().await.expect_err("cancelled");
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume");
    open_wait_on(&engine, &run_id, "hold").await;
    send(&engine, &run_id, "hold", json!("done")).await;
    let result = join(resumed).await;
    let message = result[0]["timedOut"].as_str().expect("timed out message");
    assert!(
        message.starts_with(r#"waitFor("never") timed out: no signal arrived by its deadline 20"#),
        "{message}"
    );
    assert_eq!(result[1], json!({ "fallback": true }));
    assert_eq!(result[2], json!("done"));
    let signals = store.list_signals(&run_id).await.expect("signals");
    assert_eq!(
        signals[0].state,
        SignalState::Pending,
        "left for a later wait"
    );
}

/// Cancelling a waiting run ends its wait as cancelled; resumed, it waits again under the same
/// step and the same deadline, and takes a signal.
pub async fn a_cancelled_wait_waits_again_on_resume_until_the_same_deadline(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.wait_for("go", json!({ "timeoutMs": 600_000 })).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let before = open_waits(&engine, &run_id, 1).await;
    let deadline = before[0].deadline.expect("a deadline");
    handle.cancel();
    let error = handle.join().await.expect_err("cancelled");
    assert_eq!(error.to_string(), "workflow cancelled");
    let store = fixture.store.as_ref();
    let waits = wait_steps(store, &run_id).await;
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].state, State::Cancelled);
    let refused = engine
        .signal(&run_id, "go", json!(1), SignalOptions::default())
        .await
        .expect_err("a cancelled run takes no signals");
    assert!(matches!(refused, Error::InvalidState { .. }), "{refused:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume");
    let after = open_waits(&engine, &run_id, 1).await;
    assert_eq!(after[0].step_id, before[0].step_id, "the same step");
    assert_eq!(
        after[0].deadline,
        Some(deadline),
        "the deadline never restarts"
    );
    send(&engine, &run_id, "go", json!("resumed")).await;
    assert_eq!(join(resumed).await, json!("resumed"));
    let events = engine.events(&run_id, 0, 1_000).await.expect("events");
    assert!(events
        .iter()
        .any(|event| event.typed() == Some(EventType::WaitCompleted)
            && event.payload["data"]["outcome"] == json!("cancelled")));
}

/// Editing a wait's timeout, description or schema while the run waits keeps its step and its
/// deadline; the running script's schema applies when the signal is consumed.
pub async fn a_wait_whose_options_changed_keeps_its_step_and_deadline(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx
            .wait_for("go", json!({ "timeoutMs": 600_000, "description": "v1" }))
            .await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let before = open_waits(&engine, &run_id, 1).await;
    handle.cancel();
    handle.join().await.expect_err("cancelled");
    let edited = scripts.workflow("main.mjs", |ctx| async move {
        let schema = json!({ "type": "object", "required": ["ok"] });
        Ok(ctx
            .wait_for(
                "go",
                json!({ "timeoutMs": 1, "description": "v2", "schema": schema }),
            )
            .await?)
    });
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume");
    let after = open_waits(&engine, &run_id, 1).await;
    assert_eq!(after[0].step_id, before[0].step_id, "not orphaned");
    assert_eq!(after[0].deadline, before[0].deadline, "not restarted");
    // Stored before the edit: the send is checked against v1 (no schema) and accepted; the
    // edited script's schema rejects it when the wait looks.
    send(&engine, &run_id, "go", json!({ "nope": 1 })).await;
    send(&engine, &run_id, "go", json!({ "ok": true })).await;
    assert_eq!(join(resumed).await, json!({ "ok": true }));
    let signals = fixture.store.list_signals(&run_id).await.expect("signals");
    assert_eq!(signals[0].state, SignalState::Rejected);
    assert_eq!(signals[1].state, SignalState::Consumed);
    drop(edited);
}

/// A payload that does not match the open wait's schema is refused at send time with the
/// validation errors; one stored before the wait opened is rejected when the wait looks, with
/// its reason; an oversized payload is refused.
pub async fn invalid_payloads_are_refused_at_send_and_rejected_at_consumption(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("first", Value::Null).await?;
        let schema = json!({
            "type": "object",
            "required": ["ok"],
            "properties": { "ok": { "type": "boolean" } },
        });
        Ok(ctx.wait_for("answer", json!({ "schema": schema })).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("first", Duration::from_millis(300)));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let early = send(&engine, &run_id, "answer", json!({ "ok": "yes" })).await;
    open_waits(&engine, &run_id, 1).await;
    let refused = engine
        .signal(
            &run_id,
            "answer",
            json!({ "ok": "no" }),
            SignalOptions::default(),
        )
        .await
        .expect_err("refused at send");
    assert!(matches!(refused, Error::InvalidRequest(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("does not match the schema")
            && refused.to_string().contains("/ok"),
        "{refused}"
    );
    let huge = "x".repeat(1024 * 1024 + 1);
    let too_big = engine
        .signal(&run_id, "answer", json!(huge), SignalOptions::default())
        .await
        .expect_err("too big");
    assert!(
        too_big.to_string().contains("Limits::max_signal_bytes"),
        "{too_big}"
    );
    send(&engine, &run_id, "answer", json!({ "ok": true })).await;
    assert_eq!(join(handle).await, json!({ "ok": true }));
    let signals = fixture.store.list_signals(&run_id).await.expect("signals");
    assert_eq!(signals.len(), 2, "the refused sends stored nothing");
    assert_eq!(signals[0].signal_id, early.signal_id);
    assert_eq!(signals[0].state, SignalState::Rejected);
    let reason = signals[0].reason.clone().expect("reason");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains("/ok")),
        "{reason}"
    );
    assert_eq!(signals[1].state, SignalState::Consumed);
}

/// A script's `signal()` is a step: a replay returns its receipt and sends nothing again; a
/// signal to an unknown run rejects in the script.
pub async fn a_script_signal_is_sent_once_across_replays(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("receiver.mjs", |ctx| async move {
            Ok(ctx.wait_for("ping", Value::Null).await?)
        })
        .workflow("main.mjs", |ctx| async move {
            let target = ctx.args()["target"].as_str().unwrap_or_default().to_owned();
            let receipt = ctx
                .signal(target, "ping", json!({ "from": "sender" }))
                .await?;
            let unknown = match ctx.signal("run_missing", "ping", Value::Null).await {
                Ok(_) => json!("sent?"),
                Err(error) => json!(error.message),
            };
            ctx.agent("boom", Value::Null).await?;
            Ok(json!({ "receipt": receipt, "unknown": unknown }))
        });
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "boom",
        1,
        ProviderErrorKind::Terminal,
        None,
    ));
    let engine = engine_for(&fixture, &scripts, &provider);
    let receiver = engine
        .start(RunRequest::new(scripts.source("receiver.mjs"), json!({})))
        .await
        .expect("receiver");
    let receiver_id = receiver.run_id().to_owned();
    let sender = engine
        .run(scripts.source("main.mjs"), json!({ "target": receiver_id }))
        .await
        .expect_err("boom fails the sender once");
    assert_eq!(join(receiver).await, json!({ "from": "sender" }));
    let sender_id = sender.run_id().expect("sender run").to_owned();
    let resumed = engine
        .resume(&sender_id, ResumeOptions::new())
        .await
        .expect("resume");
    let result = join(resumed).await;
    assert_eq!(result["receipt"]["duplicate"], json!(false));
    assert!(result["receipt"]["signalId"].is_string());
    assert!(
        result["unknown"]
            .as_str()
            .is_some_and(|m| m.contains("run_missing")),
        "{result}"
    );
    let store = fixture.store.as_ref();
    assert_eq!(
        store
            .list_signals(&receiver_id)
            .await
            .expect("signals")
            .len(),
        1
    );
}

/// A worker parks a run that only waits (its slot is freed); a signal sent through another
/// store handle makes it due at once, and a worker continues it by replay.
pub async fn a_parked_waiting_run_continues_when_signalled_through_another_handle(
    fixture: Fixture,
) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let before = ctx.agent("before", Value::Null).await?;
        let value = ctx.wait_for("go", Value::Null).await?;
        let after = ctx.agent("after", Value::Null).await?;
        Ok(json!([before, value, after]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let submitted = engine
        .submit(start_request(&scripts, json!({})), SubmitOptions::new())
        .await
        .expect("submit");
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(2)
            .poll_interval(Duration::from_millis(20))
            .park_after(Some(Duration::from_secs(30))),
    );
    let store = fixture.store.as_ref();
    let started = std::time::Instant::now();
    loop {
        let task = store
            .get_task(&submitted.task_id)
            .await
            .expect("get_task")
            .expect("task");
        if task.state == State::Pending && task.not_before == Some(i64::MAX) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never parked: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = builder_on(fixture.another_handle().await, &scripts, &provider)
        .build()
        .expect("other engine");
    let receipt = other
        .signal(&submitted.run_id, "go", json!(42), SignalOptions::default())
        .await
        .expect("signal");
    assert!(receipt.delivered);
    let state = async {
        loop {
            let run = store
                .get_run(&submitted.run_id)
                .await
                .expect("get")
                .expect("run");
            if run.state.is_terminal() {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let run = tokio::time::timeout(Duration::from_secs(20), state)
        .await
        .expect("continued after the signal");
    assert_eq!(run.state, State::Completed);
    assert_eq!(
        run.result(),
        Some(&json!(["echo: before", 42, "echo: after"]))
    );
    worker.shutdown();
    let report = worker.join().await.expect("worker");
    assert_eq!((report.parked, report.completed), (1, 1));
    assert_eq!(provider.calls_for("before"), 1, "replayed, not paid again");
}

/// Polls until the task is parked (or detached) on waits without a deadline.
async fn wait_until_parked(
    store: &dyn DurableStore,
    task_id: &str,
) -> smol_durable_core::TaskRecord {
    let started = std::time::Instant::now();
    loop {
        let task = store
            .get_task(task_id)
            .await
            .expect("get_task")
            .expect("task");
        if task.state == State::Pending && task.not_before == Some(i64::MAX) {
            return task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never parked: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the run has finished.
async fn finished(store: &dyn DurableStore, run_id: &str) -> smol_durable_core::RunRecord {
    let wait = async {
        loop {
            let run = store.get_run(run_id).await.expect("get").expect("run");
            if run.state.is_terminal() {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the run finishes")
}

/// A local run started with `detach_on_wait` stops at its first wait that finds no signal:
/// its handle ends with `Error::Detached`, the task is handed to workers until a signal, and a
/// worker continues it by replay.
pub async fn a_run_started_to_detach_stops_at_its_wait_and_a_worker_continues_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let before = ctx.agent("before", Value::Null).await?;
        let value = ctx.wait_for("go", json!({ "description": "go?" })).await?;
        Ok(json!([before, value]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let handle = engine
        .start(start_request(&scripts, json!({})).detach_on_wait())
        .await
        .expect("start");
    let (run_id, task_id) = (handle.run_id().to_owned(), handle.task_id().to_owned());
    let detached = tokio::time::timeout(Duration::from_secs(20), handle.join())
        .await
        .expect("detaches")
        .expect_err("stops at the wait");
    assert!(
        matches!(detached, Error::Detached { until: i64::MAX }),
        "{detached:?}"
    );
    let store = fixture.store.as_ref();
    let task = wait_until_parked(store, &task_id).await;
    assert_eq!(
        task.claim_scope,
        ClaimScope::Runner,
        "any worker may continue it"
    );
    assert_eq!(task.not_before, Some(i64::MAX), "not before a signal");
    let waits = open_waits(&engine, &run_id, 0).await;
    assert_eq!(waits.len(), 1, "the wait stays listed");
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(1)
            .poll_interval(Duration::from_millis(20)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        provider.calls_for("before"),
        1,
        "nothing claims it before the signal"
    );
    send(&engine, &run_id, "go", json!("went")).await;
    let run = finished(store, &run_id).await;
    assert_eq!(run.result(), Some(&json!(["echo: before", "went"])));
    worker.shutdown();
    worker.join().await.expect("worker");
    assert_eq!(provider.calls_for("before"), 1, "replayed, not paid again");
}

/// A child run waiting when its worker parks the run stays open (`pending`, not failed): a
/// signal sent to the child's own id is taken when a worker continues the run.
pub async fn a_parked_child_run_takes_a_signal_sent_to_it(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", |ctx| async move {
            Ok(json!({ "child": ctx.run_id(), "got": ctx.wait_for("answer", Value::Null).await? }))
        })
        .workflow("flows/main.mjs", |ctx| async move {
            Ok(ctx
                .workflow(json!({ "scriptPath": "./child.mjs" }), json!({}))
                .await?)
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    let request = RunRequest::new(scripts.source("flows/main.mjs"), json!({}));
    let submitted = engine
        .submit(request, SubmitOptions::new())
        .await
        .expect("submit");
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(1)
            .poll_interval(Duration::from_millis(20))
            .park_after(Some(Duration::from_secs(30))),
    );
    let store = fixture.store.as_ref();
    wait_until_parked(store, &submitted.task_id).await;
    let runs = store
        .list_runs(&RunFilter {
            task_id: Some(submitted.task_id.clone()),
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    let child = runs
        .iter()
        .find(|run| !run.is_root())
        .expect("the child run");
    assert_eq!(child.state, State::Pending, "waits with its run");
    let waits = engine
        .waits(&WaitFilter {
            task_id: Some(submitted.task_id.clone()),
            ..WaitFilter::default()
        })
        .await
        .expect("waits");
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].run_id, child.run_id, "the child's wait");
    let receipt = send(&engine, &child.run_id, "answer", json!(7)).await;
    assert!(receipt.delivered);
    let run = finished(store, &submitted.run_id).await;
    assert_eq!(
        run.result(),
        Some(&json!({ "child": child.run_id, "got": 7 }))
    );
    worker.shutdown();
    worker.join().await.expect("worker");
}

/// How many waits race signals in
/// [`timeouts_racing_signals_lose_nothing_and_deliver_nothing_twice`].
const RACE_ROUNDS: u64 = 1_000;

/// Waits with a 1 ms timeout race a sender: every signal is consumed at most once, by a wait
/// that answered it, oldest first, or is still pending; none is lost, none delivered twice.
pub async fn timeouts_racing_signals_lose_nothing_and_deliver_nothing_twice(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let mut received = Vec::new();
        let mut timeouts = 0u64;
        for _ in 0..RACE_ROUNDS {
            match ctx.wait_for("tick", json!({ "timeoutMs": 1 })).await {
                Ok(value) => received.push(value),
                Err(error) if error.kind == HostErrorKind::WaitTimeout => timeouts += 1,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(json!({ "received": received, "timeouts": timeouts }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = engine_for(&fixture, &scripts, &provider);
    let (handle, run_id) = start_main(&engine, &scripts).await;
    let sender = {
        let engine = engine.clone();
        let run_id = run_id.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..RACE_ROUNDS {
                match engine
                    .signal(&run_id, "tick", json!(n), SignalOptions::default())
                    .await
                {
                    Ok(receipt) => sent.push(receipt.signal_id),
                    Err(Error::InvalidState { .. }) => break,
                    Err(error) => panic!("send {n}: {error}"),
                }
                if n % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            sent
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(240), handle.join())
        .await
        .expect("the race must finish")
        .expect("the run must complete")
        .result;
    let sent = sender.await.expect("sender");
    let store = fixture.store.as_ref();
    let signals = store.list_signals(&run_id).await.expect("signals");
    let waits = wait_steps(store, &run_id).await;
    assert_eq!(waits.len() as u64, RACE_ROUNDS);
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    let mut stored: Vec<String> = signals.iter().map(|s| s.signal_id.clone()).collect();
    stored.sort();
    assert_eq!(stored, sent_sorted, "every sent signal is stored, once");
    let received_steps: Vec<&StepRecord> = waits
        .iter()
        .filter(|wait| {
            wait.result
                .as_ref()
                .is_some_and(|r| r["outcome"] == json!("received"))
        })
        .collect();
    let consumed: Vec<_> = signals
        .iter()
        .filter(|signal| signal.state == SignalState::Consumed)
        .collect();
    assert_eq!(
        consumed.len(),
        received_steps.len(),
        "one signal per answered wait"
    );
    for signal in &consumed {
        let step = waits
            .iter()
            .find(|wait| Some(&wait.step_id) == signal.step_id.as_ref())
            .expect("the consuming step");
        assert_eq!(
            step.result.as_ref().map(|r| &r["signalId"]),
            Some(&json!(signal.signal_id)),
            "the step answered with the signal that names it"
        );
    }
    assert!(
        signals
            .iter()
            .all(|signal| matches!(signal.state, SignalState::Consumed | SignalState::Pending)),
        "nothing rejected"
    );
    let received: Vec<u64> = result["received"]
        .as_array()
        .expect("received")
        .iter()
        .map(|value| value.as_u64().expect("n"))
        .collect();
    assert_eq!(received.len(), consumed.len());
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "oldest first, none twice: {received:?}"
    );
    let timeouts = result["timeouts"].as_u64().expect("timeouts");
    assert_eq!(timeouts + received.len() as u64, RACE_ROUNDS);
}
