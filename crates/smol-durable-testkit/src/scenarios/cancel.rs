//! Cancellation: in this process, from another engine, with a session log.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_cancel_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::cancel,
            $factory,
            cancellation_marks_attempt_run_and_task_cancelled,
            cancellation_from_another_engine_is_noticed_by_heartbeat
        );
    };
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
        Some(json!({ "message": "workflow cancelled", "kind": "cancelled" }))
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
