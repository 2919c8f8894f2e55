//! Debugging without paying twice: forks (a new run from another's completed steps), offline
//! replays (no provider call, no write), and the warning of a run that left steps unreached.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use smol_durable_core::store::{LedgerSource, StepRecord};
use smol_durable_core::{
    DivergenceReason, ForkOptions, ForkPoint, ReplayOptions, ReplayVerdict, SignalOptions,
};

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_fork_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::fork,
            $factory,
            a_fork_copies_the_steps_before_its_point_and_runs_the_rest,
            a_fork_at_each_kind_of_step_keeps_what_came_before,
            a_fork_without_a_point_reruns_only_what_changed_and_warns_of_unreached_steps,
            failed_and_cancelled_runs_can_be_forked,
            a_fork_of_a_running_run_copies_what_had_completed,
            forking_a_child_run_or_a_step_that_does_not_exist_is_refused,
            a_replay_calls_no_provider_and_writes_nothing,
            a_replay_reports_diverging_longer_and_shorter_scripts,
            a_replay_reports_a_non_deterministic_script,
            a_replay_follows_the_run_through_caught_failures_and_unfinished_ends,
            a_resume_that_leaves_completed_steps_unreached_warns
        );
    };
}

/// A step of every kind a run records: agent, sleep, child workflow, wait, signal (to the run
/// `args.target`), then an agent.
fn every_kind(scripts: ScriptedEngine) -> ScriptedEngine {
    scripts
        .workflow("flows/child.mjs", |ctx| async move {
            Ok(ctx.agent("inner", Value::Null).await?)
        })
        .workflow("flows/main.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            ctx.sleep(1).await?;
            let child = ctx
                .workflow(json!({ "scriptPath": "./child.mjs" }), Value::Null)
                .await?;
            let go = ctx.wait_for("go", Value::Null).await?;
            let target = ctx.args()["target"].as_str().unwrap_or_default().to_owned();
            ctx.signal(target, "note", json!("from main")).await?;
            let b = ctx.agent("b", Value::Null).await?;
            Ok(json!({ "a": a, "child": child, "go": go, "b": b }))
        })
}

/// An engine that finds `./child.mjs` of [`every_kind`].
fn every_kind_engine(
    fixture: &Fixture,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> Engine {
    builder(fixture, scripts, provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine")
}

/// Runs `flows/main.mjs` of [`every_kind`] to its end (sending it the signal it waits for)
/// and returns its id; the run it signals is a queued run nobody executes.
async fn run_every_kind(engine: &Engine, scripts: &ScriptedEngine) -> String {
    let target = engine
        .submit(
            RunRequest::new(scripts.source("flows/child.mjs"), json!({})),
            SubmitOptions::default(),
        )
        .await
        .expect("the signalled run")
        .run_id;
    let handle = engine
        .start(RunRequest::new(
            scripts.source("flows/main.mjs"),
            json!({ "target": target }),
        ))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    engine
        .signal(&run_id, "go", json!("yes"), SignalOptions::default())
        .await
        .expect("signal");
    tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the run ends")
        .expect("the run completes");
    run_id
}

async fn steps(store: &dyn DurableStore, run_id: &str) -> Vec<StepRecord> {
    store.load_steps(run_id).await.expect("steps")
}

async fn fork_and_join(engine: &Engine, run_id: &str, options: ForkOptions) -> (String, Value) {
    let handle = engine.fork(run_id, options).await.expect("fork");
    let fork_id = handle.run_id().to_owned();
    let output = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the fork ends")
        .expect("the fork completes");
    (fork_id, output.result)
}

/// Forks `source` before step `point`, answers the fork's wait for `go` with `answer`, and
/// returns the fork's id and result.
async fn fork_answering(
    engine: &Engine,
    source: &str,
    point: u32,
    answer: Value,
) -> (String, Value) {
    let handle = engine
        .fork(
            source,
            ForkOptions::new().before_step(ForkPoint::Step(point)),
        )
        .await
        .expect("fork");
    let fork_id = handle.run_id().to_owned();
    engine
        .signal(&fork_id, "go", answer, SignalOptions::default())
        .await
        .expect("signal");
    let output = handle.join().await.expect("fork completes");
    (fork_id, output.result)
}

/// A fork before step 3 starts with copies of steps 1 and 2 (same names and results, in the
/// same order, billed as copied and not spent), runs the rest live, records its lineage, and
/// leaves the source run as it was.
pub async fn a_fork_copies_the_steps_before_its_point_and_runs_the_rest(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let a = ctx.agent("a", Value::Null).await?;
        ctx.sleep(1).await?;
        let b = ctx.agent("b", Value::Null).await?;
        let c = ctx.agent("c", Value::Null).await?;
        Ok(json!([a, b, c]))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let store = fixture.store.as_ref();
    let source = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let before = steps(store, &source.run_id).await;
    let source_ledger = store.ledger_entries(&source.run_id).await.expect("ledger");
    let (fork_id, result) = fork_and_join(
        &engine,
        &source.run_id,
        ForkOptions::new().before_step(ForkPoint::Step(3)),
    )
    .await;
    assert_eq!(result, source.result);
    assert_eq!(provider.call_count(), 5, "b and c ran again, a did not");
    assert_eq!(provider.calls_for("a"), 1);
    let forked = steps(store, &fork_id).await;
    let names = |steps: &[StepRecord]| -> Vec<String> {
        steps.iter().map(|s| s.checkpoint_name.clone()).collect()
    };
    assert_eq!(
        names(&forked),
        names(&before),
        "the fork reaches the same steps"
    );
    for (copy, original) in forked.iter().zip(&before).take(2) {
        assert_ne!(copy.step_id, original.step_id);
        assert_eq!(copy.run_id, fork_id);
        assert_eq!(
            (&copy.state, &copy.result),
            (&State::Completed, &original.result)
        );
    }
    // The source is untouched.
    assert_eq!(steps(store, &source.run_id).await, before);
    assert_eq!(
        store.ledger_entries(&source.run_id).await.expect("ledger"),
        source_ledger
    );
    let fork = store.get_run(&fork_id).await.expect("run").expect("fork");
    let origin = fork.workflow.forked_from.expect("lineage");
    assert_eq!(
        (
            origin.run_id.as_str(),
            origin.before_step,
            origin.copied_steps
        ),
        (source.run_id.as_str(), Some(3), 2)
    );
    assert_eq!(
        origin.before_checkpoint.as_deref(),
        Some(before[2].checkpoint_name.as_str())
    );
    // One copied row for `a` (the sleep cost nothing), shown but not spent.
    let ledger = store.ledger_entries(&fork_id).await.expect("ledger");
    let copied: Vec<_> = ledger
        .iter()
        .filter(|entry| entry.source_type == LedgerSource::Copied)
        .collect();
    assert_eq!(copied.len(), 1);
    assert_eq!(
        copied[0].step_id.as_deref(),
        Some(forked[0].step_id.as_str())
    );
    assert_eq!(copied[0].output_tokens, 4);
    assert_eq!(
        store.budget_spent(&fork_id).await.expect("spent"),
        8,
        "b and c only"
    );
    assert_eq!(
        engine
            .token_usage(&fork_id)
            .await
            .expect("usage")
            .output_tokens,
        8
    );
}

/// Forks before each step: each copies exactly the steps before it; a copied child step keeps
/// the child's result (the child does not run again, and its cost comes along as copied), a
/// copied wait needs no new signal, a copied signal is not sent again.
pub async fn a_fork_at_each_kind_of_step_keeps_what_came_before(fixture: Fixture) {
    let scripts = every_kind(ScriptedEngine::new());
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = every_kind_engine(&fixture, &scripts, &provider);
    let store = fixture.store.as_ref();
    let source = run_every_kind(&engine, &scripts).await;
    let recorded = steps(store, &source).await;
    let kinds: Vec<StepKind> = recorded.iter().map(|s| s.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Agent,
            StepKind::Sleep,
            StepKind::Workflow,
            StepKind::Wait,
            StepKind::Signal,
            StepKind::Agent
        ]
    );
    assert_eq!(provider.call_count(), 3);
    let target = store
        .get_run(&source)
        .await
        .expect("run")
        .expect("run")
        .args["target"]
        .as_str()
        .expect("target")
        .to_owned();
    let sent = || async { store.list_signals(&target).await.expect("signals").len() };
    assert_eq!(sent().await, 1);
    // Before the last agent call, by name: nothing but `b` runs, no signal is needed.
    let (fork_id, result) = fork_and_join(
        &engine,
        &source,
        ForkOptions::new().before_step(ForkPoint::Checkpoint(recorded[5].checkpoint_name.clone())),
    )
    .await;
    assert_eq!(result["go"], json!("yes"));
    assert_eq!(
        (provider.calls_for("inner"), provider.calls_for("b")),
        (1, 2)
    );
    let copied = store.ledger_entries(&fork_id).await.expect("ledger");
    let copied_tokens: u64 = copied
        .iter()
        .filter(|entry| entry.source_type == LedgerSource::Copied)
        .map(|entry| entry.output_tokens)
        .sum();
    assert_eq!(copied_tokens, 8, "a and the child's call, copied");
    assert_eq!(store.budget_spent(&fork_id).await.expect("spent"), 4);
    assert_eq!(sent().await, 1, "the copied signal step was not sent again");
    // Before the signal: the fork sends its own.
    fork_and_join(
        &engine,
        &source,
        ForkOptions::new().before_step(ForkPoint::Step(5)),
    )
    .await;
    assert_eq!(sent().await, 2);
    // Before the wait: the fork waits for its own signal.
    let (_, result) = fork_answering(&engine, &source, 4, json!("again")).await;
    assert_eq!(result["go"], json!("again"));
    assert_eq!(
        provider.calls_for("inner"),
        1,
        "the copied child step is kept"
    );
    // Before the child: the child runs again, under a new child run.
    fork_answering(&engine, &source, 3, json!(1)).await;
    assert_eq!(provider.calls_for("inner"), 2);
    // Before the sleep and before the first call: one copy, then none.
    for (point, copies) in [(2, 1), (1, 0)] {
        let (fork_id, _) = fork_answering(&engine, &source, point, json!(1)).await;
        let run = store.get_run(&fork_id).await.expect("run").expect("fork");
        assert_eq!(
            run.workflow.forked_from.expect("lineage").copied_steps,
            copies
        );
    }
    assert_eq!(
        provider.calls_for("a"),
        2,
        "only the fork before step 1 called `a`"
    );
}

/// Without a fork point every completed step is copied: a changed script or changed arguments
/// re-run only the calls that changed, and the steps the new script no longer reaches are
/// reported once, as a warning event, when the fork completes.
pub async fn a_fork_without_a_point_reruns_only_what_changed_and_warns_of_unreached_steps(
    fixture: Fixture,
) {
    let scripts = ScriptedEngine::new()
        .workflow("main.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let b = ctx.agent("b", Value::Null).await?;
            Ok(json!([a, b]))
        })
        .workflow("edited.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let who = ctx.args()["who"].as_str().unwrap_or("nobody").to_owned();
            let b = ctx.agent(format!("b for {who}"), Value::Null).await?;
            Ok(json!([a, b]))
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let events = Arc::new(RecordingEventSink::new());
    let engine = builder(&fixture, &scripts, &provider)
        .event_sink(events.clone())
        .build()
        .expect("engine");
    let source = engine
        .run(scripts.source("main.mjs"), json!({ "who": "Ada" }))
        .await
        .expect("run");
    let (fork_id, result) = fork_and_join(
        &engine,
        &source.run_id,
        ForkOptions::new()
            .source(scripts.source("edited.mjs"))
            .args(json!({ "who": "Bob" })),
    )
    .await;
    assert_eq!(result, json!(["echo: a", "echo: b for Bob"]));
    assert_eq!(provider.call_count(), 3, "only the changed call ran");
    let fork = fixture
        .store
        .get_run(&fork_id)
        .await
        .expect("run")
        .expect("fork");
    assert_eq!(fork.args, json!({ "who": "Bob" }));
    let origin = fork.workflow.forked_from.expect("lineage");
    assert_eq!((origin.before_step, origin.copied_steps), (None, 2));
    let warnings: Vec<_> = events
        .events()
        .into_iter()
        .filter(|event| event.event_type == EventType::StepsUnreached)
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for the fork");
    assert_eq!(warnings[0].metadata.run_id, fork_id);
    assert_eq!(warnings[0].data["count"], json!(1));
    assert_eq!(warnings[0].data["first"]["number"], json!(2));
}

/// A failed run and a cancelled run fork like any other: their completed steps are copied,
/// the rest runs.
pub async fn failed_and_cancelled_runs_can_be_forked(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let a = ctx.agent("a", Value::Null).await?;
        let slow = ctx.agent("slow", Value::Null).await?;
        let b = ctx.agent("b", Value::Null).await?;
        Ok(json!([a, slow, b]))
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("b", 1, ProviderErrorKind::Terminal, None)
            .with_delay("slow", Duration::from_millis(50)),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect_err("b fails");
    let failed = only_run(fixture.store.as_ref()).await;
    let (_, result) = fork_and_join(&engine, &failed, ForkOptions::new()).await;
    assert_eq!(result, json!(["echo: a", "echo: slow", "echo: b"]));
    assert_eq!(
        (
            provider.calls_for("a"),
            provider.calls_for("slow"),
            provider.calls_for("b")
        ),
        (1, 1, 2)
    );
    // Cancelled during `slow`: `a` is copied, `slow` runs again.
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(30)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let cancelled = handle.run_id().to_owned();
    wait_for_steps(fixture.store.as_ref(), &cancelled, 2).await;
    engine.cancel(&cancelled).await.expect("cancel");
    assert!(matches!(handle.join().await, Err(Error::Cancelled)));
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let (_, result) = fork_and_join(&engine, &cancelled, ForkOptions::new()).await;
    assert_eq!(result, json!(["echo: a", "echo: slow", "echo: b"]));
    assert_eq!(
        (provider.calls_for("a"), provider.calls_for("slow")),
        (0, 1)
    );
}

/// A run still executing forks from the steps that had completed when the fork read them (a
/// completed step never changes); the source goes on undisturbed.
pub async fn a_fork_of_a_running_run_copies_what_had_completed(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let a = ctx.agent("a", Value::Null).await?;
        let slow = ctx.agent("slow", Value::Null).await?;
        Ok(json!([a, slow]))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_millis(500)));
    // The slow call's claim is written 50 ms into it: the fork finds it running.
    let limits = deferring_claims(Duration::from_millis(50));
    let engine = builder(&fixture, &scripts, &provider)
        .limits(limits)
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let source = handle.run_id().to_owned();
    wait_for_steps(fixture.store.as_ref(), &source, 2).await;
    let forked = engine
        .submit_fork(&source, ForkOptions::new(), SubmitOptions::default())
        .await
        .expect("fork");
    let copies = steps(fixture.store.as_ref(), &forked.run_id).await;
    assert_eq!(copies.len(), 1, "only `a` had completed");
    assert_eq!(copies[0].state, State::Completed);
    let output = handle.join().await.expect("the source completes");
    assert_eq!(output.result, json!(["echo: a", "echo: slow"]));
}

/// A child run cannot be forked (its root can), and a fork point that is not a step of the
/// run is refused with a message saying why; nothing is created.
pub async fn forking_a_child_run_or_a_step_that_does_not_exist_is_refused(fixture: Fixture) {
    let scripts = every_kind(ScriptedEngine::new());
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = every_kind_engine(&fixture, &scripts, &provider);
    let store = fixture.store.as_ref();
    let source = run_every_kind(&engine, &scripts).await;
    let task = store
        .get_run(&source)
        .await
        .expect("run")
        .expect("run")
        .task_id;
    let child = store
        .list_runs(&RunFilter {
            task_id: Some(task),
            ..RunFilter::default()
        })
        .await
        .expect("runs")
        .into_iter()
        .find(|run| !run.is_root())
        .expect("the child run");
    let refused = |result: Result<smol_durable_core::RunHandle, Error>| match result {
        Err(Error::InvalidRequest(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let message = refused(engine.fork(&child.run_id, ForkOptions::new()).await);
    assert!(message.contains("child"), "{message}");
    assert!(message.contains(&source), "names the root: {message}");
    let message = refused(
        engine
            .fork(&source, ForkOptions::new().before_step(ForkPoint::Step(8)))
            .await,
    );
    assert!(message.contains("1 to 6"), "{message}");
    let inner = steps(store, &child.run_id).await[0].checkpoint_name.clone();
    let message = refused(
        engine
            .fork(
                &source,
                ForkOptions::new().before_step(ForkPoint::Checkpoint(inner)),
            )
            .await,
    );
    assert!(message.contains("child"), "{message}");
    // The run and the queued run it signalled: no fork was created.
    assert_eq!(
        store
            .list_runs(&RunFilter::roots())
            .await
            .expect("runs")
            .len(),
        2,
        "nothing was created"
    );
}

/// Everything a store holds about a run, to compare before and after a replay.
async fn snapshot(store: &dyn DurableStore, run_id: &str) -> String {
    let run = store.get_run(run_id).await.expect("run").expect("run");
    let attempts = store.list_attempts(&run.task_id).await.expect("attempts");
    format!(
        "{run:?}\n{:?}\n{attempts:?}\n{:?}\n{:?}\n{:?}",
        store.get_task(&run.task_id).await.expect("task"),
        steps(store, run_id).await,
        store.ledger_entries(run_id).await.expect("ledger"),
        store
            .read_events(run_id, 0, usize::MAX)
            .await
            .expect("events"),
    )
}

/// The run's own script replays it identically: no provider call, and the store holds exactly
/// what it held before (run, task, attempts, steps, ledger, events). A failed run replays up
/// to the step where it stopped.
pub async fn a_replay_calls_no_provider_and_writes_nothing(fixture: Fixture) {
    let scripts = every_kind(ScriptedEngine::new());
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = every_kind_engine(&fixture, &scripts, &provider);
    let store = fixture.store.as_ref();
    let source = run_every_kind(&engine, &scripts).await;
    let calls = provider.call_count();
    let before = snapshot(store, &source).await;
    let report = engine
        .replay(&source, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    assert_eq!(report.replayed, 6);
    assert!(report.unreached.is_empty() && report.stopped_at.is_none());
    assert_eq!(
        report.result.as_ref().map(|r| &r["go"]),
        Some(&json!("yes"))
    );
    assert_eq!(provider.call_count(), calls, "no provider call");
    assert_eq!(snapshot(store, &source).await, before, "no write");
    // A run that failed at `b`: the replayed `b` fails as it did, and so does the script.
    let scripts = scripts.workflow("flows/failing.mjs", |ctx| async move {
        ctx.agent("a", Value::Null).await?;
        Ok(ctx.agent("b", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "b",
        1,
        ProviderErrorKind::Terminal,
        None,
    ));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let failed = engine
        .run(scripts.source("flows/failing.mjs"), json!({}))
        .await
        .expect_err("b fails")
        .run_id()
        .expect("the run")
        .to_owned();
    let report = engine
        .replay(&failed, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    assert_eq!((report.replayed, &report.stopped_at), (2, &None));
    let error = report.error.clone().expect("the script failed");
    assert!(error.contains("scripted failure"), "{error}");
    assert_eq!(provider.call_count(), 2);
    // The script fixed to catch that failure now completes: another ending than the run's.
    let scripts = scripts.workflow("flows/failing.mjs", |ctx| async move {
        ctx.agent("a", Value::Null).await?;
        Ok(json!(ctx.agent("b", Value::Null).await.is_err()))
    });
    let report = engine
        .replay(&failed, ReplayOptions::new())
        .await
        .expect("replay");
    match &report.verdict {
        ReplayVerdict::Diverged(divergence) => assert!(
            matches!(&divergence.reason, DivergenceReason::Completed { replayed, .. } if *replayed == json!(true)),
            "{divergence:?}"
        ),
        other => panic!("expected a divergence, got {other:?}"),
    }
    // A run whose budget refused its second call (no step was written for it): the replay
    // refuses it again, from the replayed spending, and ends as the run did.
    let scripts = scripts.workflow("flows/two_calls.mjs", |ctx| async move {
        ctx.agent("a", Value::Null).await?;
        Ok(ctx.agent("b", Value::Null).await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let spent = engine
        .start(RunRequest::new(scripts.source("flows/two_calls.mjs"), json!({})).budget_total(4))
        .await
        .expect("start");
    let spent_id = spent.run_id().to_owned();
    let error = spent.join().await.expect_err("the budget is spent");
    assert_eq!(error.kind(), smol_durable_core::ErrorKind::BudgetExhausted);
    let report = engine
        .replay(&spent_id, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    assert_eq!((report.replayed, &report.stopped_at), (1, &None));
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("budget exhausted"),
        "{report:?}"
    );
    assert_eq!(provider.call_count(), 1);
}

/// A changed call is reported with the recorded step it used to be and a diff of their
/// prompts; a longer script diverges at its first new call; a shorter one ends with completed
/// steps unreached; a script with another result says so.
pub async fn a_replay_reports_diverging_longer_and_shorter_scripts(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("main.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let b = ctx.agent("review the plan", Value::Null).await?;
            Ok(json!([a, b]))
        })
        .workflow("changed.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let b = ctx.agent("review the plan twice", Value::Null).await?;
            Ok(json!([a, b]))
        })
        .workflow("longer.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let b = ctx.agent("review the plan", Value::Null).await?;
            ctx.sleep(5).await?;
            Ok(json!([a, b]))
        })
        .workflow("shorter.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            Ok(json!([a]))
        })
        .workflow("other_result.mjs", |ctx| async move {
            let a = ctx.agent("a", Value::Null).await?;
            let b = ctx.agent("review the plan", Value::Null).await?;
            Ok(json!([b, a]))
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let run = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let replay = |path: &'static str| {
        let engine = engine.clone();
        let source = scripts.source(path);
        let run_id = run.run_id.clone();
        async move {
            engine
                .replay(&run_id, ReplayOptions::new().source(source))
                .await
                .expect("replay")
        }
    };
    let diverged = |report: &smol_durable_core::ReplayReport| match &report.verdict {
        ReplayVerdict::Diverged(divergence) => divergence.clone(),
        other => panic!("expected a divergence, got {other:?}"),
    };
    let report = replay("changed.mjs").await;
    let divergence = diverged(&report);
    assert_eq!(divergence.reason, DivergenceReason::NewCall);
    let call = divergence.call.clone().expect("the call made now");
    assert_eq!(call.kind, StepKind::Agent);
    assert_eq!(call.signature["prompt"], json!("review the plan twice"));
    let recorded = divergence.recorded.clone().expect("the recorded call");
    assert_eq!(
        (recorded.number, recorded.signature["prompt"].clone()),
        (2, json!("review the plan"))
    );
    let text = divergence.describe();
    assert!(text.contains("- review the plan\n"), "{text}");
    assert!(text.contains("+ review the plan twice\n"), "{text}");
    assert_eq!(report.replayed, 1);
    assert_eq!(report.unreached.len(), 1);
    let report = replay("longer.mjs").await;
    let divergence = diverged(&report);
    assert_eq!(divergence.call.expect("the new call").kind, StepKind::Sleep);
    assert_eq!(divergence.recorded, None, "nothing was left to be");
    assert_eq!(report.replayed, 2);
    let report = replay("shorter.mjs").await;
    let divergence = diverged(&report);
    assert_eq!(divergence.reason, DivergenceReason::StepsUnreached);
    assert_eq!(divergence.recorded.expect("the first unreached").number, 2);
    let report = replay("other_result.mjs").await;
    assert!(matches!(
        diverged(&report).reason,
        DivergenceReason::ResultDiffers { .. }
    ));
    assert!(replay("main.mjs").await.is_identical());
    assert_eq!(provider.call_count(), 2, "no replay called the provider");
}

/// A script whose calls change between two replays of the same run is reported as
/// non-deterministic.
pub async fn a_replay_reports_a_non_deterministic_script(fixture: Fixture) {
    let evaluations = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&evaluations);
    let scripts = ScriptedEngine::new().workflow("main.mjs", move |ctx| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let a = ctx.agent("a", Value::Null).await?;
            // Two calls, in an order that changes every other evaluation.
            let (first, second) = if n.is_multiple_of(2) {
                ("b", "c")
            } else {
                ("c", "b")
            };
            ctx.agent(first, Value::Null).await?;
            ctx.agent(second, Value::Null).await?;
            Ok(a)
        }
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let run = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let report = engine
        .replay(&run.run_id, ReplayOptions::new())
        .await
        .expect("replay");
    match report.verdict {
        ReplayVerdict::NonDeterministic {
            index,
            first,
            second,
        } => {
            assert_eq!(index, 1);
            assert_ne!(first, second);
        }
        other => panic!("expected non-determinism, got {other:?}"),
    }
    assert_eq!(provider.call_count(), 3);
}

/// A resumed run that completes without reaching completed steps of its earlier attempt says
/// so once, naming the first of them.
pub async fn a_resume_that_leaves_completed_steps_unreached_warns(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("a", Value::Null).await?;
        ctx.agent("b", Value::Null).await?;
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
        .expect_err("boom");
    let run_id = only_run(fixture.store.as_ref()).await;
    let scripts = scripts.workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("b", Value::Null).await?)
    });
    engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    let warnings: Vec<_> = events
        .events()
        .into_iter()
        .filter(|event| event.event_type == EventType::StepsUnreached)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].data["count"], json!(1));
    assert_eq!(warnings[0].data["first"]["number"], json!(1));
    assert_eq!(warnings[0].data["first"]["kind"], json!("agent"));
    drop(scripts);
}

/// A failure the script caught replays as the same rejection, so the script goes on as it did;
/// a completed run whose edited script now fails at its end diverges; a run stopped while one
/// parallel branch was in flight and another had completed replays identically to that point;
/// and an unfinished run's script replays up to the first call it had not made yet.
pub async fn a_replay_follows_the_run_through_caught_failures_and_unfinished_ends(
    fixture: Fixture,
) {
    let scripts = ScriptedEngine::new()
        .workflow("caught.mjs", |ctx| async move {
            let failed = ctx.agent("flaky", Value::Null).await.is_err();
            let after = ctx.agent("after", Value::Null).await?;
            Ok(json!([failed, after]))
        })
        .workflow("caught_then_throws.mjs", |ctx| async move {
            let failed = ctx.agent("flaky", Value::Null).await.is_err();
            ctx.agent("after", Value::Null).await?;
            let _ = failed;
            Err(ScriptError::thrown("broken at the end"))
        })
        .workflow("parallel.mjs", |ctx| async move {
            let calls = vec![
                ctx.agent("slow", Value::Null),
                ctx.agent("quick", Value::Null),
            ];
            let answers = futures::future::try_join_all(calls).await?;
            Ok(json!(answers))
        });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("flaky", 1, ProviderErrorKind::Terminal, None)
            .with_delay("slow", Duration::from_secs(30)),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let caught = engine
        .run(scripts.source("caught.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(caught.result, json!([true, "echo: after"]));
    let report = engine
        .replay(&caught.run_id, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    assert_eq!(report.replayed, 2);
    let report = engine
        .replay(
            &caught.run_id,
            ReplayOptions::new().source(scripts.source("caught_then_throws.mjs")),
        )
        .await
        .expect("replay");
    match &report.verdict {
        ReplayVerdict::Diverged(divergence) => assert!(
            matches!(&divergence.reason, DivergenceReason::Failed { message } if message.contains("broken at the end")),
            "{divergence:?}"
        ),
        other => panic!("expected a divergence, got {other:?}"),
    }
    // Cancelled while `slow` ran and `quick` had completed.
    let handle = engine
        .start(RunRequest::new(scripts.source("parallel.mjs"), json!({})))
        .await
        .expect("start");
    let stopped = handle.run_id().to_owned();
    wait_for_steps(fixture.store.as_ref(), &stopped, 2).await;
    for _ in 0..1_000 {
        let steps = steps(fixture.store.as_ref(), &stopped).await;
        if steps.iter().any(|step| step.state == State::Completed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.cancel(&stopped).await.expect("cancel");
    let _ = handle.join().await;
    let report = engine
        .replay(&stopped, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    assert_eq!(report.stopped_at.expect("the step in flight").number, 1);
    // A run nobody has executed yet: its script goes beyond the (empty) recording without
    // diverging.
    let submitted = engine
        .submit(
            RunRequest::new(scripts.source("caught.mjs"), json!({})),
            SubmitOptions::default(),
        )
        .await
        .expect("submit");
    let report = engine
        .replay(&submitted.run_id, ReplayOptions::new())
        .await
        .expect("replay");
    assert_eq!(report.verdict, ReplayVerdict::Identical, "{report:?}");
    let beyond = report.beyond_recording.expect("where it stopped");
    assert_eq!(beyond.signature["prompt"], json!("flaky"));
    assert_eq!(
        provider.calls_for("after"),
        1,
        "no replay called the provider"
    );
}
