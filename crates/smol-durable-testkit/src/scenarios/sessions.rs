//! Session logs: a provider's transcript is saved before the run ends, however it ends.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_sessions_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::sessions,
            $factory,
            session_is_exported_before_the_run_completes,
            session_is_exported_before_the_run_fails,
            session_is_exported_before_the_run_is_cancelled
        );
    };
}

/// A session sink that records, at save time, the state of the run and of the saved step
/// (`None`: no row yet, its claim deferred to its completion).
#[derive(Debug)]
struct ProbeSink {
    store: Arc<dyn DurableStore>,
    seen: Mutex<Vec<(String, State, Option<State>)>>,
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
            .map(|step| step.state);
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((step_id.to_owned(), run.state, step));
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
    Result<smol_durable_core::RunOutput, Error>,
    Vec<(String, State, Option<State>)>,
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
    let limits = smol_durable_core::Limits {
        cancel_grace: Duration::from_millis(50),
        ..smol_durable_core::Limits::default()
    };
    let engine = builder(&fixture, &script, &provider)
        .session_log_sink(sink.clone())
        .limits(limits)
        .build()
        .expect("engine");
    if let Ok(mut slot) = engine_slot.lock() {
        *slot = Some(engine.clone());
    }
    let result = engine
        .run(script.source("main.mjs"), json!({}))
        .await
        .map_err(Error::from);
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

/// The session-log sink receives the full result before the step is stored as completed (it is
/// `running`, or has no row while its claim is deferred) and the run has not completed.
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
    assert_eq!(seen[0].1, State::Running);
    assert!(matches!(seen[0].2, None | Some(State::Running)), "{seen:?}");
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
    assert!(matches!(seen[0].2, None | Some(State::Running)), "{seen:?}");
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
    assert!(matches!(seen[0].2, None | Some(State::Running)), "{seen:?}");
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
