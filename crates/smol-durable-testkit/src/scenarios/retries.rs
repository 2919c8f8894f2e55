//! Tries inside an agent call (the engine's default policy, rate-limit hints), the events that
//! announce retries and sleeps, and following runs from a process that only submits.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use futures::StreamExt;
use smol_durable_core::decide::RetryPolicy;
use smol_durable_core::WorkflowEvent;

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_retries_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::retries,
            $factory,
            the_engines_default_retry_policy_covers_calls_without_their_own,
            a_rate_limit_hint_stretches_the_wait_between_tries,
            sleeps_are_announced_with_their_wake_time,
            a_submitter_queues_runs_and_follows_them_to_their_end
        );
    };
}

/// Calls that set no `retry` are tried as the engine's default policy says; a call's own
/// policy wins. Each retry is announced, and the completed event reports the failed tries
/// that were paid for.
pub async fn the_engines_default_retry_policy_covers_calls_without_their_own(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let flaky = ctx.agent("flaky", Value::Null).await?;
        let once = ctx
            .agent("only once", json!({ "retry": { "maxAttempts": 1 } }))
            .await;
        // Sets the backoff only: the default's three tries stay.
        let partial = ctx
            .agent("partial", json!({ "retry": { "backoffMs": 1 } }))
            .await?;
        Ok(json!({ "flaky": flaky, "once": once.is_ok(), "partial": partial }))
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .fail_first(
                "flaky",
                2,
                ProviderErrorKind::Transient,
                Some(Usage::tokens(1, 2)),
            )
            .fail_first("only once", 1, ProviderErrorKind::Transient, None)
            .fail_first("partial", 2, ProviderErrorKind::Transient, None),
    );
    let sink = Arc::new(RecordingEventSink::new());
    let engine = builder(&fixture, &scripts, &provider)
        .default_agent_retry(RetryPolicy {
            max_tries: 3,
            backoff_ms: 0,
        })
        .event_sink(sink.clone())
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(
        output.result,
        json!({ "flaky": "echo: flaky", "once": false, "partial": "echo: partial" })
    );
    assert_eq!(
        provider.calls_for("partial"),
        3,
        "the default's tries, the call's backoff"
    );
    assert_eq!(
        provider.calls_for("flaky"),
        3,
        "the default policy: three tries"
    );
    assert_eq!(
        provider.calls_for("only once"),
        1,
        "the call's own policy wins"
    );
    let events = sink.events();
    let retries: Vec<&WorkflowEvent> = events
        .iter()
        .filter(|event| event.event_type == EventType::AgentRetrying)
        .collect();
    assert_eq!(
        retries.len(),
        4,
        "two for flaky, two for partial: {retries:#?}"
    );
    assert_eq!(retries[0].data["try"], json!(1));
    assert_eq!(retries[0].data["maxTries"], json!(3));
    assert_eq!(retries[0].data["kind"], json!("transient"));
    let completed = events
        .iter()
        .find(|event| event.event_type == EventType::AgentCompleted)
        .expect("completed");
    assert_eq!(
        completed.data["failedTries"]["count"],
        json!(2),
        "{completed:#?}"
    );
    assert_eq!(
        completed.data["failedTries"]["usage"]["outputTokens"],
        json!(4)
    );
    assert_eq!(
        output.token_usage.output_tokens, 6,
        "flaky: 2 + 2 failed and 1 answered; partial: 1 answered (its failures reported no usage)"
    );
}

/// A rate-limited provider's `retry_after` longer than the policy's backoff is waited for.
pub async fn a_rate_limit_hint_stretches_the_wait_between_tries(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx
            .agent(
                "limited",
                json!({ "retry": { "maxAttempts": 2, "backoffMs": 0 } }),
            )
            .await?)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "limited",
        1,
        ProviderErrorKind::RateLimited {
            retry_after_ms: Some(300),
        },
        None,
    ));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let calls = provider.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].started - calls[0].started;
    assert!(
        waited >= Duration::from_millis(300),
        "the second try came {waited:?} after the first"
    );
}

/// A sleep that starts waiting says until when.
pub async fn sleeps_are_announced_with_their_wake_time(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.sleep(20).await?;
        Ok(Value::Null)
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let sink = Arc::new(RecordingEventSink::new());
    let engine = builder(&fixture, &scripts, &provider)
        .event_sink(sink.clone())
        .build()
        .expect("engine");
    engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    let events = sink.events();
    let started = events
        .iter()
        .find(|event| event.event_type == EventType::SleepStarted)
        .expect("a sleep_started event");
    assert_eq!(started.data["durationMs"], json!(20));
    assert!(
        started.data["wakeAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{started:#?}"
    );
    assert!(started.metadata.step_id.is_some());
}

/// An engine built with only a store queues runs, follows their events as a worker elsewhere
/// writes them, and waits for their results; it refuses to execute anything itself.
pub async fn a_submitter_queues_runs_and_follows_them_to_their_end(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let answer = ctx.agent("hello", Value::Null).await?;
        Ok(json!({ "answer": answer }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let submitter = Engine::builder()
        .store(Arc::clone(&fixture.store))
        .build_submitter()
        .expect("submitter");
    let run = submitter
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({})),
            SubmitOptions::new(),
        )
        .await
        .expect("submit");
    let refused = submitter
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect_err("a submitter executes nothing");
    assert!(matches!(refused, Error::InvalidRequest(_)), "{refused:?}");
    let idle = submitter.worker(WorkerOptions::new());
    assert!(matches!(idle.join().await, Err(Error::InvalidRequest(_))));

    let events = submitter.follow_events(&run.run_id);
    let executor = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let worker = executor.worker(
        WorkerOptions::new()
            .poll_interval(Duration::from_millis(20))
            .retry_backoff(Duration::from_millis(1)),
    );
    let output = tokio::time::timeout(Duration::from_secs(20), submitter.wait(&run.run_id))
        .await
        .expect("the run finishes")
        .expect("it completes");
    assert_eq!(output.result, json!({ "answer": "echo: hello" }));
    assert_eq!(output.run_id, run.run_id);
    let seen: Vec<String> =
        tokio::time::timeout(Duration::from_secs(20), events.collect::<Vec<_>>())
            .await
            .expect("the event stream ends with the run")
            .into_iter()
            .map(|event| event.expect("event").event_type)
            .collect();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("workflow.started"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("workflow.result"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|kind| kind == "workflow.agent_completed"),
        "{seen:?}"
    );
    worker.shutdown();
    worker.join().await.expect("worker");
}
