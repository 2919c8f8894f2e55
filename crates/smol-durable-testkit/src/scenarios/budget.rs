//! The budget: billed tries, and no call once it is spent.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_budget_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::budget,
            $factory,
            runtime_retry_without_global_retry_bills_failed_tries,
            budget_exhaustion_rejects_before_the_provider_is_called
        );
    };
}

/// A per-call retry happens inside one claimed step: one workflow attempt, one completed step,
/// no failed step, and the failed try's usage is billed.
pub async fn runtime_retry_without_global_retry_bills_failed_tries(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let value = ctx
            .agent(
                "hello",
                json!({ "retry": { "maxAttempts": 2, "backoffMs": 0 } }),
            )
            .await?;
        Ok(json!({ "result": value }))
    });
    let provider = Arc::new(
        ScriptedProvider::new("scripted")
            .with_output("hello", json!("recovered: hello"))
            .fail_first(
                "hello",
                1,
                ProviderErrorKind::Transient,
                Some(Usage::tokens(2, 3)),
            ),
    );
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let output = engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!({ "result": "recovered: hello" }));
    assert_eq!(provider.call_count(), 2);
    let store = fixture.store.as_ref();
    let (_, _, attempts) = states(store, &output.run_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        step_states(store, &output.run_id, StepKind::Agent).await,
        vec![State::Completed]
    );
    let steps = store.load_steps(&output.run_id).await.expect("steps");
    assert_eq!(steps[0].fence, 1, "retries do not reclaim the step");
    let ledger = store.ledger_entries(&output.run_id).await.expect("ledger");
    let mut kinds: Vec<(&str, u64)> = ledger
        .iter()
        .map(|e| (e.source_type.as_str(), e.output_tokens))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec![("agent_attempt", 3), ("agent_step", 1)]);
    assert_eq!(output.token_usage.output_tokens, 4);
}

/// With the allowance spent, the next `agent()` rejects with SPEC's message without calling
/// the provider; a resume with a larger allowance continues.
pub async fn budget_exhaustion_rejects_before_the_provider_is_called(fixture: Fixture) {
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        let first = ctx.agent("one", Value::Null).await?;
        let before = ctx.budget();
        let second = ctx.agent("two", Value::Null).await?;
        Ok(json!({ "first": first, "second": second, "spentBefore": before.spent, "remaining": before.remaining() }))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted").with_usage(Usage::tokens(1, 4)));
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let request = RunRequest::new(scripts.source("main.mjs"), json!({})).budget_total(4);
    let error = engine
        .start(request)
        .await
        .expect("start")
        .join()
        .await
        .expect_err("budget");
    assert_eq!(
        error.to_string(),
        "budget exhausted: spent 4 of 4 output tokens"
    );
    assert_eq!(provider.call_count(), 1);
    let run_id = only_run(fixture.store.as_ref()).await;
    assert_eq!(
        fixture
            .store
            .load_steps(&run_id)
            .await
            .expect("steps")
            .len(),
        1,
        "nothing was claimed for the rejected call"
    );
    let resumed = engine
        .resume(&run_id, ResumeOptions::new().budget_total(10))
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(resumed.result["second"], json!("echo: two"));
    assert_eq!(
        resumed.result["spentBefore"],
        json!(4),
        "spent is read from the ledger at attempt start"
    );
    assert_eq!(resumed.result["remaining"], json!(6));
    assert_eq!(provider.call_count(), 2);
}
