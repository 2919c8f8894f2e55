//! Runner mode: submit, workers, retries of attempts, shutdown, cancellation and parking.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_runner_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::runner,
            $factory,
            submitted_runs_are_executed_by_workers,
            submitting_twice_with_one_key_queues_one_run,
            failed_attempts_of_submitted_runs_are_retried,
            a_worker_shutting_down_hands_its_runs_back,
            cancel_reaches_a_run_on_a_worker,
            long_sleeps_park_runs_until_they_wake
        );
    };
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
) -> (smol_durable_core::SubmittedRun, smol_durable_core::Worker) {
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
    // "flaky once" fails the first attempt; "always" fails every attempt. Both fail
    // transiently: a terminal failure is not retried at all.
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("flaky once", 1, ProviderErrorKind::Transient, None)
            .fail_first("always", 100, ProviderErrorKind::Transient, None),
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
    let clock = smol_durable_core::ManualClock::new(1_000_000);
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
