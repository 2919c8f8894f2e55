//! Store faults: retried, recognised when the answer was lost, or failing the run clearly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_faults_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::faults,
            $factory,
            runs_are_exact_through_retryable_store_faults,
            every_write_whose_answer_is_lost_is_recognised,
            a_terminal_store_fault_fails_the_run_clearly_and_resume_finishes_it
        );
    };
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
        "record_step",
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
            Err(Error::Provider(_)) => {}
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
            .filter(|entry| entry.source_type == smol_durable_core::store::LedgerSource::AgentStep)
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
                    step.fence,
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
    // Nothing half written: the first step stands, the second has no result and no bill (and,
    // its claim deferred to its completion, no row).
    let steps = fixture.store.load_steps(&run_id).await.expect("steps");
    let completed = steps
        .iter()
        .filter(|step| step.state == State::Completed)
        .count();
    assert_eq!((steps.len(), completed), (1, 1), "{steps:#?}");
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
