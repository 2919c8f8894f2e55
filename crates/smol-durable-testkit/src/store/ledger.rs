//! The budget ledger: one row per billed source, summed as the budget.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_ledger_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::ledger,
            $factory,
            concurrent_completions_write_one_ledger_row,
            budget_sum_equals_ledger_rows,
            a_run_start_reads_the_steps_and_the_spend
        );
    };
}

/// Four concurrent completions of one step (same fence) write exactly one ledger row, and every
/// caller sees the same stored value.
///
/// Checks [`DurableStore::complete_step`](smol_durable_core::DurableStore::complete_step).
pub async fn concurrent_completions_write_one_ledger_row(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.clone();
    let step = claimed(
        fixture.store.as_ref(),
        &run_id,
        "step:complete",
        "owner_0",
        10_000,
        100,
    )
    .await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = fixture.another_handle().await;
        let run_id = run_id.clone();
        let step_id = step.step_id.clone();
        tasks.push(tokio::spawn(async move {
            let entry = ledger(&run_id, &step_id, "agent_step", &step_id, 7);
            complete_fenced(
                store.as_ref(),
                &step_id,
                1,
                json!({"output": format!("done-{worker}")}),
                vec![entry],
                200,
            )
            .await
        }));
    }
    let mut seen = Vec::new();
    let mut writers = 0;
    for task in tasks {
        let completed = task.await.expect("join").expect("completion");
        writers += usize::from(!completed.adopted);
        seen.push(completed.value);
    }
    assert_eq!(
        writers, 1,
        "exactly one completion is written, the others adopt it"
    );
    assert!(
        seen.windows(2).all(|pair| pair[0] == pair[1]),
        "callers saw different values: {seen:?}"
    );
    let entries = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].output_tokens, 7);
    assert_eq!(fixture.store.budget_spent(&run_id).await.expect("spent"), 7);
}

/// The budget is the sum of ledger rows, whatever mix of completions and billed failures wrote
/// them.
///
/// Checks
/// [`DurableStore::budget_spent`](smol_durable_core::DurableStore::budget_spent),
/// [`DurableStore::ledger_entries`](smol_durable_core::DurableStore::ledger_entries).
pub async fn budget_sum_equals_ledger_rows(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let attempt = started(start(store, &created, OWNER, 1_000, 0).await);
    let a = claimed(store, run_id, "step:a", OWNER, 1_000, 0).await;
    let b = claimed(store, run_id, "step:b", OWNER, 1_000, 0).await;
    complete_fenced(
        store,
        &a.step_id,
        1,
        json!({"output": 1}),
        vec![
            ledger(run_id, &a.step_id, "agent_attempt", "a:1:1", 4),
            ledger(run_id, &a.step_id, "agent_step", &a.step_id, 10),
        ],
        5,
    )
    .await
    .expect("complete");
    let failed = store
        .fail_step(FailStep {
            step_id: b.step_id.clone(),
            fence: 1,
            state: State::Failed,
            reason: json!({"message": "x"}),
            ledger: vec![ledger(run_id, &b.step_id, "agent_attempt", "b:1:1", 6)],
            now: 6,
        })
        .await
        .expect("fail");
    assert!(matches!(failed, StepCas::Applied(_)));
    let entries = store.ledger_entries(run_id).await.expect("ledger");
    assert_eq!(entries.len(), 3);
    let sum: u64 = entries.iter().map(|e| e.output_tokens).sum();
    assert_eq!(sum, 20);
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 20);
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed {
            result: json!(null),
        },
        7,
    )
    .await
    .expect("finish");
    assert_eq!(
        store
            .get_run(run_id)
            .await
            .expect("get")
            .expect("run")
            .budget_spent,
        20,
        "the cached counter is refreshed from the ledger when the attempt ends"
    );
    assert_eq!(store.budget_spent("run_other").await.expect("spent"), 0);
}

/// What an attempt reads at its start is the run's steps and its spend, exactly as the two
/// reads it stands for answer: with no steps yet, and with steps and ledger rows (a fork's
/// copied rows not spent).
///
/// Checks
/// [`DurableStore::load_run_start`](smol_durable_core::DurableStore::load_run_start).
pub async fn a_run_start_reads_the_steps_and_the_spend(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    assert_eq!(
        store.load_run_start(run_id).await.expect("start"),
        smol_durable_core::RunStart::default(),
        "a run without steps or ledger rows"
    );
    let a = claimed(store, run_id, "step:a", OWNER, 1_000, 0).await;
    claimed(store, run_id, "step:b", OWNER, 1_000, 1).await;
    complete_fenced(
        store,
        &a.step_id,
        1,
        json!({"output": 1}),
        vec![
            ledger(run_id, &a.step_id, "agent_step", &a.step_id, 10),
            ledger(
                run_id,
                &a.step_id,
                smol_durable_core::store::LedgerSource::COPIED_STEP,
                "copy:a",
                100,
            ),
        ],
        5,
    )
    .await
    .expect("complete");
    let start = store.load_run_start(run_id).await.expect("start");
    assert_eq!(start.budget_spent, 10, "copied rows are not spent");
    assert_eq!(
        start.budget_spent,
        store.budget_spent(run_id).await.expect("spent")
    );
    assert_eq!(start.steps, store.load_steps(run_id).await.expect("steps"));
    let names: Vec<_> = start
        .steps
        .iter()
        .map(|s| s.checkpoint_name.as_str())
        .collect();
    assert_eq!(names, ["step:a", "step:b"]);
    assert_eq!(
        store.load_run_start("run_other").await.expect("start"),
        smol_durable_core::RunStart::default()
    );
}
