//! Resuming and taking over: replay without paying twice, dead owners, live owners, held steps.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_resume_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::resume,
            $factory,
            resume_replays_without_calling_the_provider_again,
            resuming_a_completed_run_changes_nothing,
            resume_takes_over_from_a_dead_owner_at_once,
            resume_waits_at_most_one_lease_ttl_for_a_live_owner,
            heartbeat_keeps_a_long_call_leased,
            a_step_held_by_a_dead_worker_is_reclaimed_when_its_lease_expires,
            a_caller_waiting_on_a_held_step_replays_it_when_the_holder_finishes,
            a_deferred_call_is_recorded_once_and_fenced_by_its_attempt,
            a_deferred_call_that_meets_a_deposed_claim_takes_the_step_over
        );
    };
}

/// A local run of `main.mjs` (its script stored) whose first attempt `owner` started, leased
/// for `lease_ms` from now.
async fn run_held_by(
    store: &dyn DurableStore,
    scripts: &ScriptedEngine,
    owner: OwnerRecord,
    lease_ms: i64,
) -> smol_durable_core::store::CreatedRun {
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
    let now = smol_durable_core::Clock::now_ms(&smol_durable_core::SystemClock);
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
            attempt_id: smol_durable_core::new_id("attempt"),
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

/// Once the run (sleeping at `1_000_000` on a manual clock) has stored its first step, another
/// worker takes the `agent("hello")` step it makes next, with a lease until `1_060_000`.
async fn hold_the_next_step_elsewhere(
    store: &dyn DurableStore,
    run_id: &str,
) -> (
    smol_durable_core::StepSignature,
    smol_durable_core::store::StepRecord,
) {
    wait_for_steps(store, run_id, 1).await;
    claim_hello_elsewhere(store, run_id, "owner_elsewhere", 1_060_000, 1_000_000).await
}

/// The step of `agent("hello")` claimed by `owner` under a lease until `lease_expires_at`.
async fn claim_hello_elsewhere(
    store: &dyn DurableStore,
    run_id: &str,
    owner: &str,
    lease_expires_at: i64,
    now: i64,
) -> (
    smol_durable_core::StepSignature,
    smol_durable_core::store::StepRecord,
) {
    let signature = smol_durable_core::StepSignature::agent(
        "root",
        "scripted",
        "hello",
        &Value::Null,
        None,
        None,
    );
    let held = store
        .insert_step(NewStep {
            step_id: smol_durable_core::new_id("step"),
            run_id: run_id.to_owned(),
            root_run_id: run_id.to_owned(),
            kind: StepKind::Agent,
            checkpoint_name: signature.base_checkpoint(),
            input_signature_hash: signature.hash.clone(),
            input_signature_json: signature.json.clone(),
            input: json!({ "prompt": "hello" }),
            worker_id: owner.to_owned(),
            lease_expires_at,
            now,
        })
        .await
        .expect("insert");
    let InsertStep::Inserted(held) = held else {
        panic!("the step was free")
    };
    (signature, held)
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

/// A call longer than the lease keeps its lease: the heartbeat renews it every ttl/3.
pub async fn heartbeat_keeps_a_long_call_leased(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("long", Value::Null).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("long", Duration::from_millis(900)));
    // The call's claim is written 20 ms into it (it would complete without one if it were short).
    let limits = deferring_claims(Duration::from_millis(20));
    let engine = builder(&fixture, &scripts, &provider)
        .lease_ttl(Duration::from_millis(300))
        .limits(limits)
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&engine, &scripts).await;
    let run_id = handle.run_id().to_owned();
    let store = fixture.another_handle().await;
    wait_for_steps(store.as_ref(), &run_id, 1).await;
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
    let now = smol_durable_core::Clock::now_ms(&smol_durable_core::SystemClock);
    assert!(
        later.lease_expires_at.expect("lease") > now,
        "a live owner's lease never lapses"
    );
    handle.join().await.expect("run");
    assert_eq!(provider.call_count(), 1);
}

/// Limits under which every call is claimed before it runs. The holder these cases stage
/// inserts its row after the run loaded its steps — only a deposed attempt could do that — and
/// a deferred call does not read the store before it runs (see
/// `a_deferred_call_is_recorded_once_and_fenced_by_its_attempt`).
fn claim_first() -> smol_durable_core::Limits {
    deferring_claims(Duration::ZERO)
}

/// An agent step held under a live lease by another worker is waited for (the provider is not
/// called), then reclaimed with `attempts = 2` once the lease expires.
pub async fn a_step_held_by_a_dead_worker_is_reclaimed_when_its_lease_expires(fixture: Fixture) {
    let clock = smol_durable_core::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(1).await?;
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .clock(Arc::new(clock.clone()))
        .limits(claim_first())
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
    assert_eq!((step.state, step.fence), (State::Completed, 2));
}

/// A call that finds its step held by another live worker waits, then replays the holder's
/// result (never running the call itself). A store that notifies wakes the waiter when the
/// holder finishes, with no poll at all (the engine's clock never moves); others are seen at
/// the next poll.
pub async fn a_caller_waiting_on_a_held_step_replays_it_when_the_holder_finishes(fixture: Fixture) {
    let clock = smol_durable_core::ManualClock::new(1_000_000);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(1).await?;
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let limits = smol_durable_core::Limits {
        wait_poll: Duration::from_secs(30),
        ..claim_first()
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
        .complete_step(smol_durable_core::store::CompleteStep {
            step_id: held.step_id.clone(),
            fence: held.fence,
            result: json!({ "output": "answered elsewhere" }),
            ledger: Vec::new(),
            now: 1_000_002,
        })
        .await
        .expect("complete");
    assert!(matches!(
        finished,
        smol_durable_core::store::StepCas::Applied(_)
    ));
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

/// A call that ends within `Limits::deferred_claim` has no row while it runs and is stored
/// completed at fence 1 by one write; a longer one is claimed (visible as `running`) when the
/// window ends and completes under that claim; a call whose attempt was deposed meanwhile
/// writes nothing — no row, no ledger row — and its run stops with a lost lease.
pub async fn a_deferred_call_is_recorded_once_and_fenced_by_its_attempt(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let quick = ctx.agent("quick", Value::Null).await?;
        let long = ctx.agent("long", Value::Null).await?;
        Ok(json!([quick, long]))
    });
    let seen_during_quick: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let probe = Arc::clone(&seen_during_quick);
    let store = Arc::clone(&fixture.store);
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_delay("quick", Duration::from_millis(150))
            .with_delay("long", Duration::from_millis(600))
            .on_call(move |request| {
                if request.prompt != "quick" {
                    return;
                }
                let (store, probe, run_id) = (
                    Arc::clone(&store),
                    Arc::clone(&probe),
                    request.run_id.clone(),
                );
                tokio::spawn(async move {
                    let rows = store.load_steps(&run_id).await.expect("steps").len();
                    probe.lock().expect("probe").push(rows);
                });
            }),
    );
    let limits = deferring_claims(Duration::from_millis(300));
    let engine = builder(&fixture, &scripts, &provider)
        .limits(limits.clone())
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    // The long call is claimed 300 ms into its 600 ms: a running row beside the quick one.
    let steps = wait_for_steps(fixture.store.as_ref(), &run_id, 2).await;
    assert_eq!(
        steps
            .iter()
            .map(|step| (step.state.clone(), step.fence))
            .collect::<Vec<_>>(),
        [(State::Completed, 1), (State::Running, 1)]
    );
    let output = handle.join().await.expect("run");
    assert_eq!(output.result, json!(["echo: quick", "echo: long"]));
    assert_eq!(
        *seen_during_quick.lock().expect("probe"),
        [0],
        "no row while the quick call ran"
    );
    let steps = fixture.store.load_steps(&run_id).await.expect("steps");
    assert!(steps
        .iter()
        .all(|step| step.state == State::Completed && step.fence == 1));
    assert_eq!(
        (provider.calls_for("quick"), provider.calls_for("long")),
        (1, 1)
    );
    let ledger = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 2, "one ledger row per step");

    // Deposed while its deferred call runs: the call's record is fenced off.
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("deposed", Value::Null).await?)
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted").with_delay("deposed", Duration::from_millis(300)),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .limits(limits)
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&engine, &scripts).await;
    let run_id = handle.run_id().to_owned();
    let run = fixture
        .store
        .get_run(&run_id)
        .await
        .expect("get")
        .expect("run");
    let task = fixture
        .store
        .get_task(&run.task_id)
        .await
        .expect("get")
        .expect("task");
    let taken = fixture
        .store
        .start_attempt(smol_durable_core::store::StartAttempt {
            attempt_id: smol_durable_core::new_id("attempt"),
            task_id: task.task_id.clone(),
            run_id: run_id.clone(),
            owner_id: "owner_successor".into(),
            lease_expires_at: i64::MAX,
            take_over_from: task.claimed_by_owner_id.clone(),
            revive: true,
            now: smol_durable_core::Clock::now_ms(&smol_durable_core::SystemClock),
        })
        .await
        .expect("start_attempt");
    assert!(matches!(
        taken,
        smol_durable_core::store::AttemptStart::Started(_)
    ));
    let error = handle.join().await.expect_err("the deposed attempt stops");
    assert!(matches!(error, Error::LeaseLost(_)), "{error:?}");
    assert_eq!(provider.calls_for("deposed"), 1);
    assert!(fixture
        .store
        .load_steps(&run_id)
        .await
        .expect("steps")
        .is_empty());
    assert!(fixture
        .store
        .ledger_entries(&run_id)
        .await
        .expect("ledger")
        .is_empty());
}

/// A deposed attempt still running may claim a step after its successor loaded its steps; the
/// successor's deferred call then meets that row when it records. It takes the step over as a
/// claim would have (the row's lease has lapsed): the step completes under fence 2 with the
/// successor's result, billed once to the row's step id, the provider called once.
pub async fn a_deferred_call_that_meets_a_deposed_claim_takes_the_step_over(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("hello", Duration::from_millis(300)));
    let limits = deferring_claims(Duration::from_secs(30));
    let engine = builder(&fixture, &scripts, &provider)
        .limits(limits)
        .build()
        .expect("engine");
    let handle = start_until_agent_runs(&engine, &scripts).await;
    let run_id = handle.run_id().to_owned();
    // Its claim deferred, the call has no row: the deposed attempt's, lapsed, takes the name.
    let now = smol_durable_core::Clock::now_ms(&smol_durable_core::SystemClock);
    let (_, held) = claim_hello_elsewhere(
        fixture.store.as_ref(),
        &run_id,
        "owner_deposed",
        now - 1,
        now,
    )
    .await;
    let output = handle.join().await.expect("the run completes");
    assert_eq!(output.result, json!("echo: hello"));
    assert_eq!(provider.calls_for("hello"), 1);
    let steps = fixture.store.load_steps(&run_id).await.expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (&steps[0].step_id, steps[0].state.clone(), steps[0].fence),
        (&held.step_id, State::Completed, 2)
    );
    let ledger = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].step_id.as_deref(), Some(held.step_id.as_str()));
    assert_eq!(ledger[0].source_id, held.step_id);
}
