//! What a provider reports while a call runs (live `workflow.agent_event`s), and a call's own
//! `timeoutMs`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use smol_durable_core::AgentEvent;

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_agents_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::agents,
            $factory,
            agent_events_are_stored_while_the_call_runs,
            a_call_past_its_timeout_is_stopped_and_fails
        );
    };
}

/// Each event a provider sends becomes a stored `workflow.agent_event` at once, with the
/// provider, the session and the action, before the call has answered.
pub async fn agent_events_are_stored_while_the_call_runs(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("watched", Value::Null).await?)
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_delay("watched", Duration::from_secs(2))
            .on_call(|request| {
                request.events.send(
                    AgentEvent::new(json!({ "type": "tool_use", "name": "Bash" }))
                        .with_session_id(Some("live-session"))
                        .with_action(Some("Bash: cargo test".to_owned())),
                );
                // A tool result far over the event size limit.
                let output = "x".repeat(300_000);
                request.events.send(
                    AgentEvent::new(json!({ "type": "tool_result", "a": output, "b": output }))
                        .with_session_id(Some("live-session"))
                        .with_action(Some("Read: big.log".to_owned())),
                );
            }),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let run_id = handle.run_id().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_millis(1_500);
    let live = loop {
        let stored = engine.events(&run_id, 0, 100).await.expect("events");
        if let Some(event) = stored
            .iter()
            .find(|event| event.event_type == EventType::AgentEvent.as_str())
        {
            break event.payload.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent event stored while the call ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        provider.calls()[0].ended.is_none(),
        "stored before the call answered"
    );
    assert_eq!(live["data"]["provider"], json!("scripted"));
    assert_eq!(live["data"]["sessionId"], json!("live-session"));
    assert_eq!(live["data"]["action"], json!("Bash: cargo test"));
    assert_eq!(
        live["data"]["providerEvent"],
        json!({ "type": "tool_use", "name": "Bash" })
    );
    assert_eq!(live["metadata"]["sessionId"], json!("live-session"));
    assert!(live["metadata"]["stepId"].is_string());
    let output = handle.join().await.expect("run");
    assert_eq!(output.result, json!("echo: watched"));
    // Only the provider's event is cut to the size limit: the fields around it stay.
    let stored = engine.events(&run_id, 0, 100).await.expect("events");
    let big = stored
        .iter()
        .filter(|event| event.event_type == EventType::AgentEvent.as_str())
        .nth(1)
        .expect("the large event")
        .payload
        .clone();
    assert_eq!(big["data"]["provider"], json!("scripted"));
    assert_eq!(big["data"]["action"], json!("Read: big.log"));
    assert!(big["data"]["stepId"].is_string());
    assert_eq!(big["data"]["truncated"], json!(true));
    assert!(big.to_string().len() < 70_000, "{}", big.to_string().len());
    let types: Vec<String> = engine
        .events(&run_id, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    let position = |wanted: EventType| types.iter().position(|t| t == wanted.as_str()).unwrap();
    assert!(position(EventType::AgentStarted) < position(EventType::AgentEvent));
    assert!(position(EventType::AgentEvent) < position(EventType::AgentCompleted));
}

/// `timeoutMs` stops a call that takes longer (the provider's future is dropped, which kills
/// what it started) and fails the step with a retryable error; a quick call is unaffected.
pub async fn a_call_past_its_timeout_is_stopped_and_fails(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let quick = ctx.agent("quick", json!({ "timeoutMs": 5_000 })).await?;
        let slow = ctx.agent("slow", json!({ "timeoutMs": 100 })).await;
        Ok(json!({ "quick": quick, "slow": slow.err().map(|error| error.message) }))
    });
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_delay("slow", Duration::from_secs(10)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let started = std::time::Instant::now();
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert!(started.elapsed() < Duration::from_secs(5), "not waited out");
    assert_eq!(output.result["quick"], json!("echo: quick"));
    assert_eq!(
        output.result["slow"],
        json!("scripted provider timed out after 100 ms (timeoutMs)")
    );
    let slow = &provider.calls()[1];
    assert!(slow.ended.is_some(), "the call was dropped");
    assert_eq!(slow.request.options["timeoutMs"], json!(100));
    // Two steps may share a creation millisecond: compare without their order.
    let states = step_states(fixture.store.as_ref(), &output.run_id, StepKind::Agent).await;
    let count = |wanted: State| states.iter().filter(|state| **state == wanted).count();
    assert_eq!(
        (states.len(), count(State::Completed), count(State::Failed)),
        (2, 1, 1),
        "{states:?}"
    );
}
