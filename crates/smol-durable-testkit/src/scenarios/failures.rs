//! Failures keep their kind: what failed a run reaches the host as a typed [`Error`], is stored
//! with the run as a reason with a `kind`, and decides whether a worker runs it again.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use smol_durable_core::ErrorKind;

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_failures_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::failures,
            $factory,
            uncaught_provider_failures_keep_their_kind,
            budget_schema_and_limit_failures_keep_their_kind,
            a_scripts_own_error_stays_a_script_error,
            a_failed_child_keeps_its_cause,
            workers_do_not_pay_again_for_failures_that_repeat,
            a_rate_limited_run_waits_for_the_providers_hint
        );
    };
}

/// `main.mjs`: one agent call with the prompt and options in `args`, not caught.
fn one_call() -> ScriptedEngine {
    ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let prompt = ctx.args()["prompt"].as_str().unwrap_or("").to_owned();
        let options = ctx.args()["options"].clone();
        let value = ctx.agent(prompt, options).await?;
        Ok(json!({ "value": value }))
    })
}

/// Calls whose prompt starts with `prompt` (a corrective try appends to it).
fn calls_starting(provider: &ScriptedProvider, prompt: &str) -> usize {
    provider
        .calls()
        .iter()
        .filter(|call| call.request.prompt.starts_with(prompt))
        .count()
}

/// The stored failure reason of `run_id`, checked to read back as an error of `kind`.
async fn stored_reason(store: &dyn DurableStore, run_id: &str, kind: ErrorKind) -> Value {
    let run = store.get_run(run_id).await.expect("get_run").expect("run");
    assert_eq!(run.state, State::Failed, "{run:#?}");
    let reason = run.failure_reason.expect("a failed run keeps its reason");
    assert_eq!(
        Error::from_failure_reason(&reason).kind(),
        kind,
        "stored: {reason}"
    );
    reason
}

async fn run_failing(engine: &Engine, scripts: &ScriptedEngine, args: Value) -> (String, Error) {
    let mut handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), args))
        .await
        .expect("start");
    drop(handle.events());
    let run_id = handle.run_id().to_owned();
    let error = handle.join().await.expect_err("the run fails");
    (run_id, error)
}

/// A provider failure the script does not catch fails the run as [`Error::Provider`] with the
/// provider's own kind, whether it was terminal, transient after its per-call retries, or rate
/// limited; the stored reason keeps both kinds.
pub async fn uncaught_provider_failures_keep_their_kind(fixture: Fixture) {
    let scripts = one_call();
    let limited = ProviderErrorKind::RateLimited {
        retry_after_ms: Some(5),
    };
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("terminal", 100, ProviderErrorKind::Terminal, None)
            .fail_first("transient", 100, ProviderErrorKind::Transient, None)
            .fail_first("limited", 100, limited, None),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let store = fixture.store.as_ref();
    let retry = json!({ "retry": { "maxAttempts": 2, "backoffMs": 0 } });
    let cases = [
        (
            "terminal",
            ProviderErrorKind::Terminal,
            "terminal",
            1,
            false,
        ),
        (
            "transient",
            ProviderErrorKind::Transient,
            "transient",
            2,
            true,
        ),
        ("limited", limited, "rate_limited", 2, true),
    ];
    for (prompt, kind, stored_kind, calls, retryable) in cases {
        let args = json!({ "prompt": prompt, "options": retry });
        let (run_id, error) = run_failing(&engine, &scripts, args).await;
        match &error {
            Error::Provider(provider_error) => assert_eq!(provider_error.kind(), kind),
            other => panic!("{prompt}: expected a provider error, got {other:?}"),
        }
        assert_eq!(error.kind(), ErrorKind::Provider, "{prompt}");
        assert_eq!(error.is_retryable(), retryable, "{prompt}");
        assert_eq!(provider.calls_for(prompt), calls, "{prompt}");
        let reason = stored_reason(store, &run_id, ErrorKind::Provider).await;
        assert_eq!(reason["kind"], json!("provider"), "{reason}");
        assert_eq!(reason["provider"]["kind"], json!(stored_kind), "{reason}");
    }
}

/// An exhausted budget, an answer that missed its schema twice and an oversized result each
/// fail the run with their own kind.
pub async fn budget_schema_and_limit_failures_keep_their_kind(fixture: Fixture) {
    let scripts = one_call();
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_output("wrong shape", json!(42))
            .with_output("huge", json!("x".repeat(4_096))),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .limits(smol_durable_core::Limits {
            max_result_bytes: 1_024,
            ..smol_durable_core::Limits::default()
        })
        .build()
        .expect("engine");
    let store = fixture.store.as_ref();

    let request =
        RunRequest::new(scripts.source("main.mjs"), json!({ "prompt": "paid" })).budget_total(0);
    let handle = engine.start(request).await.expect("start");
    let run_id = handle.run_id().to_owned();
    match handle.join().await.expect_err("no budget") {
        Error::BudgetExhausted { spent: 0, total: 0 } => {}
        other => panic!("expected an exhausted budget, got {other:?}"),
    }
    assert_eq!(provider.calls_for("paid"), 0);
    let reason = stored_reason(store, &run_id, ErrorKind::BudgetExhausted).await;
    assert_eq!(
        (reason["spent"].clone(), reason["total"].clone()),
        (json!(0), json!(0))
    );

    let schema = json!({ "schema": { "type": "object" } });
    let args = json!({ "prompt": "wrong shape", "options": schema });
    let (run_id, error) = run_failing(&engine, &scripts, args).await;
    match &error {
        Error::SchemaMismatch { message } => assert!(
            message.starts_with("Structured output did not match JSON Schema:"),
            "{message}"
        ),
        other => panic!("expected a schema mismatch, got {other:?}"),
    }
    assert_eq!(
        calls_starting(&provider, "wrong shape"),
        2,
        "one corrective try"
    );
    stored_reason(store, &run_id, ErrorKind::SchemaMismatch).await;

    let (run_id, error) = run_failing(&engine, &scripts, json!({ "prompt": "huge" })).await;
    assert_eq!(error.kind(), ErrorKind::Limit, "{error:?}");
    stored_reason(store, &run_id, ErrorKind::Limit).await;
}

/// A script that catches a host rejection and throws its own error fails as a script error:
/// the script took the failure over.
pub async fn a_scripts_own_error_stays_a_script_error(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        match ctx.agent("terminal", Value::Null).await {
            Ok(value) => Ok(value),
            Err(error) => Err(ScriptError::thrown(format!(
                "review failed: {}",
                error.message
            ))),
        }
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "terminal",
        100,
        ProviderErrorKind::Terminal,
        None,
    ));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let (run_id, error) = run_failing(&engine, &scripts, json!({})).await;
    assert!(matches!(error, Error::Script(_)), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Script);
    let reason = stored_reason(fixture.store.as_ref(), &run_id, ErrorKind::Script).await;
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("review failed: ")),
        "{reason}"
    );
}

/// A child run that fails on a provider's refusal fails its parent as [`Error::Workflow`] whose
/// cause is the child's own typed failure; the child run stores its own reason.
pub async fn a_failed_child_keeps_its_cause(fixture: Fixture) {
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", |ctx| async move {
            ctx.agent("terminal", Value::Null).await?;
            Ok(Value::Null)
        })
        .workflow("flows/main.mjs", |ctx| async move {
            ctx.workflow(json!({ "scriptPath": "./child.mjs" }), Value::Null)
                .await?;
            Ok(Value::Null)
        });
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "terminal",
        100,
        ProviderErrorKind::Terminal,
        None,
    ));
    let engine = builder(&fixture, &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("flows/main.mjs"), json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    let error = handle.join().await.expect_err("the child fails");
    match &error {
        Error::Workflow {
            cause: Some(cause), ..
        } => assert!(
            matches!(&**cause, Error::Provider(p) if p.kind() == ProviderErrorKind::Terminal),
            "{cause:?}"
        ),
        other => panic!("expected a failed child, got {other:?}"),
    }
    assert!(!error.is_retryable());
    let store = fixture.store.as_ref();
    let reason = stored_reason(store, &run_id, ErrorKind::Workflow).await;
    assert_eq!(reason["cause"]["kind"], json!("provider"), "{reason}");
    let task_id = store
        .get_run(&run_id)
        .await
        .expect("get_run")
        .expect("run")
        .task_id;
    let children = store
        .list_runs(&RunFilter {
            task_id: Some(task_id),
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    let child = children
        .iter()
        .find(|run| run.parent_run_id.is_some())
        .expect("the child run");
    let child_reason = child.failure_reason.clone().expect("child reason");
    assert_eq!(child_reason["kind"], json!("provider"), "{child_reason}");
}

/// A worker does not run again what would fail the same way: a provider's refusal, an
/// exhausted budget, a schema mismatch and a prompt over the size limit each cost one attempt
/// and are paid for once, however many attempts the task may have; a transient failure is
/// tried again.
pub async fn workers_do_not_pay_again_for_failures_that_repeat(fixture: Fixture) {
    let scripts = one_call();
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first("terminal", 100, ProviderErrorKind::Terminal, None)
            .fail_first("transient", 100, ProviderErrorKind::Transient, None)
            .with_output("wrong shape", json!(42)),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .limits(smol_durable_core::Limits {
            max_prompt_bytes: 64,
            ..smol_durable_core::Limits::default()
        })
        .build()
        .expect("engine");
    let submit = |args: Value, budget: Option<u64>| {
        let mut request = RunRequest::new(scripts.source("main.mjs"), args);
        if let Some(total) = budget {
            request = request.budget_total(total);
        }
        engine.submit(request, SubmitOptions::new().max_attempts(3))
    };
    let terminal = submit(json!({ "prompt": "terminal" }), None)
        .await
        .expect("submit");
    let budget = submit(json!({ "prompt": "paid" }), Some(0))
        .await
        .expect("submit");
    let schema = json!({ "schema": { "type": "object" } });
    let mismatch = submit(json!({ "prompt": "wrong shape", "options": schema }), None)
        .await
        .expect("submit");
    let transient = submit(json!({ "prompt": "transient" }), None)
        .await
        .expect("submit");
    let huge = submit(json!({ "prompt": "huge ".repeat(20) }), None)
        .await
        .expect("submit");
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(2)
            .poll_interval(Duration::from_millis(20))
            .retry_backoff(Duration::from_millis(1)),
    );
    let store = fixture.store.as_ref();
    for (run, kind, attempts) in [
        (&terminal, ErrorKind::Provider, 1),
        (&budget, ErrorKind::BudgetExhausted, 1),
        (&mismatch, ErrorKind::SchemaMismatch, 1),
        (&transient, ErrorKind::Provider, 3),
        (&huge, ErrorKind::Limit, 1),
    ] {
        let finished = tokio::time::timeout(Duration::from_secs(30), engine.wait(&run.run_id))
            .await
            .expect("the run finishes")
            .expect_err("the run fails");
        assert_eq!(finished.kind(), kind, "{finished:?}");
        let (_, task, states) = states(store, &run.run_id).await;
        assert_eq!(task, State::Failed);
        assert_eq!(states.len(), attempts, "{kind:?}: {states:?}");
        stored_reason(store, &run.run_id, kind).await;
    }
    worker.shutdown();
    worker.join().await.expect("worker");
    assert_eq!(provider.calls_for("terminal"), 1, "a refusal is paid once");
    assert_eq!(provider.calls_for("paid"), 0);
    assert_eq!(
        calls_starting(&provider, "wrong shape"),
        2,
        "one answer and one corrective try"
    );
    assert_eq!(provider.calls_for("transient"), 3, "one call per attempt");
    assert_eq!(
        calls_starting(&provider, "huge"),
        0,
        "refused before the call"
    );
}

/// A run whose provider said "rate limited, retry after N ms" is not run again by a worker
/// before N ms have passed, even when the worker's own backoff is shorter.
pub async fn a_rate_limited_run_waits_for_the_providers_hint(fixture: Fixture) {
    let scripts = one_call();
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "limited",
        100,
        ProviderErrorKind::RateLimited {
            retry_after_ms: Some(60_000),
        },
        None,
    ));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let run = engine
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({ "prompt": "limited" })),
            SubmitOptions::new().max_attempts(3),
        )
        .await
        .expect("submit");
    let worker = engine.worker(
        WorkerOptions::new()
            .poll_interval(Duration::from_millis(20))
            .retry_backoff(Duration::from_millis(1)),
    );
    let store = fixture.store.as_ref();
    let started = std::time::Instant::now();
    let task = loop {
        let attempts = store.list_attempts(&run.task_id).await.expect("attempts");
        if attempts
            .iter()
            .any(|attempt| attempt.state == State::Failed)
        {
            break store
                .get_task(&run.task_id)
                .await
                .expect("get_task")
                .expect("task");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(task.state, State::Pending);
    let not_before = task.not_before.expect("a retry time");
    assert!(
        not_before >= task.updated_at + 59_000,
        "retry at {not_before}, failed at {}",
        task.updated_at
    );
    engine.cancel(&run.run_id).await.expect("cancel");
    worker.shutdown();
    worker.join().await.expect("worker");
    assert_eq!(provider.calls_for("limited"), 1);
}
