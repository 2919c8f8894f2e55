//! Signals: the mailbox (refusals, idempotency keys, order), consuming a signal for a wait step
//! (both or neither, exactly once across handles), rejecting, waking a parked task, listing
//! open waits, deleting.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use smol_durable_core::store::{
    ConsumeSignal, NewSignal, SignalConsume, SignalSend, SignalState, WaitFilter,
};

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_signals_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::signals,
            $factory,
            signals_are_stored_in_order_and_refused_for_unknown_or_finished_runs,
            an_idempotency_key_stores_one_signal,
            consuming_a_signal_writes_both_rows_or_neither,
            one_signal_is_consumed_once_across_handles,
            a_signal_for_an_open_wait_makes_a_parked_task_due_whichever_commits_first,
            open_waits_are_listed_until_they_complete_and_signals_go_with_their_task
        );
    };
}

fn signal(run_id: &str, name: &str, payload: Value, now: i64) -> NewSignal {
    NewSignal {
        signal_id: smol_durable_core::new_id("signal"),
        run_id: run_id.to_owned(),
        name: name.to_owned(),
        payload,
        idempotency_key: None,
        now,
    }
}

fn stored(sent: SignalSend) -> smol_durable_core::SignalRecord {
    match sent {
        SignalSend::Stored(record) => record,
        other => panic!("expected the signal to be stored, got {other:?}"),
    }
}

/// A `wait` step of `run_id`, claimed by `worker`.
async fn wait_step(
    store: &dyn DurableStore,
    run_id: &str,
    names: &[&str],
    worker: &str,
    now: i64,
) -> smol_durable_core::store::StepRecord {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let sig = StepSignature::wait("root", &names);
    let checkpoint = sig.base_checkpoint();
    let step_claim = StepClaim {
        run_id,
        root_run_id: run_id,
        kind: StepKind::Wait,
        checkpoint_name: &checkpoint,
        signature: &sig,
        input: json!({ "names": names, "deadline": null, "schema": null, "description": "d" }),
        worker_id: worker,
        lease_expires_at: now + 10_000,
    };
    match acquire_step(store, &step_claim, KnownRow::Unknown, now).await {
        Ok(Acquired::Claimed(row)) => row,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn consume(
    signal_id: &str,
    step: &smol_durable_core::store::StepRecord,
    now: i64,
) -> ConsumeSignal {
    ConsumeSignal {
        signal_id: signal_id.to_owned(),
        step_id: step.step_id.clone(),
        fence: step.fence,
        result: json!({ "outcome": "received", "signalId": signal_id }),
        now,
    }
}

/// Signals are stored pending in mailbox order and read back oldest first, filtered by name;
/// an unknown run and a finished one store nothing.
///
/// Checks
/// [`DurableStore::send_signal`](smol_durable_core::DurableStore::send_signal),
/// [`DurableStore::pending_signals`](smol_durable_core::DurableStore::pending_signals),
/// [`StoreAdmin::list_signals`](smol_durable_core::StoreAdmin::list_signals).
pub async fn signals_are_stored_in_order_and_refused_for_unknown_or_finished_runs(
    fixture: Fixture,
) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.as_str();
    let mut ids = Vec::new();
    for (n, name) in ["b", "a", "b", "c"].iter().enumerate() {
        let record = stored(
            store
                .send_signal(signal(run_id, name, json!({ "n": n, "text": "é ✓" }), 10))
                .await
                .expect("send"),
        );
        assert_eq!(record.state, SignalState::Pending);
        assert_eq!(record.root_run_id, run_id);
        assert_eq!(record.created_at, 10);
        ids.push(record.signal_id);
    }
    let names = vec!["b".to_owned(), "c".to_owned()];
    let pending = store
        .pending_signals(run_id, &names, 10)
        .await
        .expect("pending");
    let order: Vec<&str> = pending.iter().map(|s| s.signal_id.as_str()).collect();
    assert_eq!(
        order,
        vec![ids[0].as_str(), ids[2].as_str(), ids[3].as_str()]
    );
    assert_eq!(pending[0].payload, json!({ "n": 0, "text": "é ✓" }));
    assert!(pending.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let first_only = store.pending_signals(run_id, &names, 1).await.expect("one");
    assert_eq!(first_only.len(), 1);
    let all = store.list_signals(run_id).await.expect("list");
    assert_eq!(all.len(), 4);
    assert_eq!(
        store
            .send_signal(signal("run_missing", "a", json!(1), 10))
            .await
            .expect("send"),
        SignalSend::RunNotFound
    );
    let attempt = started(start(store, &created, OWNER, 10_000, 20).await);
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed { result: json!(1) },
        30,
    )
    .await
    .expect("finish");
    assert_eq!(
        store
            .send_signal(signal(run_id, "a", json!(1), 40))
            .await
            .expect("send"),
        SignalSend::RunFinished(State::Completed)
    );
    assert_eq!(store.list_signals(run_id).await.expect("list").len(), 4);
}

/// A second send with the same idempotency key (to the same run) stores nothing and returns
/// the first signal, also once the run has finished; another run may use the same key.
///
/// Checks
/// [`DurableStore::send_signal`](smol_durable_core::DurableStore::send_signal).
pub async fn an_idempotency_key_stores_one_signal(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let one = seed(store, ClaimScope::Local, 0).await;
    let two = seed(store, ClaimScope::Local, 0).await;
    let keyed = |run_id: &str, payload: Value| NewSignal {
        idempotency_key: Some("key-1".into()),
        ..signal(run_id, "a", payload, 5)
    };
    let first = stored(
        store
            .send_signal(keyed(&one.run.run_id, json!(1)))
            .await
            .expect("first"),
    );
    match store
        .send_signal(keyed(&one.run.run_id, json!(2)))
        .await
        .expect("again")
    {
        SignalSend::Duplicate(earlier) => assert_eq!(earlier, first),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    stored(
        store
            .send_signal(keyed(&two.run.run_id, json!(3)))
            .await
            .expect("other run"),
    );
    let signals = store.list_signals(&one.run.run_id).await.expect("list");
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].payload, json!(1));
    // A repeat after the run finished still answers with the first signal.
    let attempt = started(start(store, &one, OWNER, 10_000, 10).await);
    finish(
        store,
        &one,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed { result: json!(1) },
        20,
    )
    .await
    .expect("finish");
    match store
        .send_signal(keyed(&one.run.run_id, json!(4)))
        .await
        .expect("late repeat")
    {
        SignalSend::Duplicate(earlier) => assert_eq!(earlier.signal_id, first.signal_id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(
        store
            .send_signal(signal(&one.run.run_id, "a", json!(5), 30))
            .await
            .expect("unkeyed"),
        SignalSend::RunFinished(State::Completed)
    );
}

/// Consuming writes the signal (`consumed`, naming the step) and the step (`completed` with the
/// result) together; a signal no longer pending, or a step no longer running under the fence,
/// writes nothing at all; a rejected signal is no longer pending.
///
/// Checks
/// [`DurableStore::consume_signal`](smol_durable_core::DurableStore::consume_signal),
/// [`DurableStore::reject_signal`](smol_durable_core::DurableStore::reject_signal).
pub async fn consuming_a_signal_writes_both_rows_or_neither(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.as_str();
    let step = wait_step(store, run_id, &["a"], OWNER, 10).await;
    let first = stored(
        store
            .send_signal(signal(run_id, "a", json!(1), 11))
            .await
            .expect("send"),
    );
    let second = stored(
        store
            .send_signal(signal(run_id, "a", json!(2), 12))
            .await
            .expect("send"),
    );
    // A stale fence: nothing is written, the signal stays pending.
    let stale = ConsumeSignal {
        fence: step.fence + 1,
        ..consume(&first.signal_id, &step, 13)
    };
    match store.consume_signal(stale).await.expect("stale") {
        SignalConsume::StepConflict(Some(current)) => assert_eq!(current.state, State::Running),
        other => panic!("expected a step conflict, got {other:?}"),
    }
    let pending = store
        .pending_signals(run_id, &["a".to_owned()], 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 2, "the stale consume took nothing");
    // Rejected: no longer pending, so it cannot be consumed.
    assert!(store
        .reject_signal(&second.signal_id, json!({ "message": "bad" }), 14)
        .await
        .expect("reject"));
    assert!(!store
        .reject_signal(&second.signal_id, json!({ "message": "again" }), 15)
        .await
        .expect("reject again"));
    match store
        .consume_signal(consume(&second.signal_id, &step, 16))
        .await
        .expect("rejected")
    {
        SignalConsume::SignalTaken(Some(taken)) => assert_eq!(taken.state, SignalState::Rejected),
        other => panic!("expected the signal to be taken, got {other:?}"),
    }
    match store
        .consume_signal(consume(&first.signal_id, &step, 17))
        .await
        .expect("consume")
    {
        SignalConsume::Consumed(done) => {
            assert_eq!(done.state, State::Completed);
            assert_eq!(
                done.result.as_ref().map(|r| &r["signalId"]),
                Some(&json!(first.signal_id))
            );
        }
        other => panic!("expected consumption, got {other:?}"),
    }
    let signals = store.list_signals(run_id).await.expect("list");
    assert_eq!(signals[0].state, SignalState::Consumed);
    assert_eq!(signals[0].step_id.as_deref(), Some(step.step_id.as_str()));
    assert_eq!(signals[0].updated_at, 17);
    assert_eq!(signals[1].state, SignalState::Rejected);
    assert_eq!(signals[1].reason, Some(json!({ "message": "bad" })));
    // The step is completed: another signal cannot complete it again.
    let third = stored(
        store
            .send_signal(signal(run_id, "a", json!(3), 18))
            .await
            .expect("send"),
    );
    match store
        .consume_signal(consume(&third.signal_id, &step, 19))
        .await
        .expect("completed step")
    {
        SignalConsume::StepConflict(Some(current)) => assert_eq!(current.state, State::Completed),
        other => panic!("expected a step conflict, got {other:?}"),
    }
    let third_now = store.list_signals(run_id).await.expect("list");
    assert_eq!(third_now[2].state, SignalState::Pending);
}

/// Two waits on two handles race for one signal: exactly one consumes it.
///
/// Checks
/// [`DurableStore::consume_signal`](smol_durable_core::DurableStore::consume_signal).
pub async fn one_signal_is_consumed_once_across_handles(fixture: Fixture) {
    let store = Arc::clone(&fixture.store);
    let other = fixture.another_handle().await;
    for round in 0..20 {
        let created = seed(store.as_ref(), ClaimScope::Local, 0).await;
        let run_id = created.run.run_id.clone();
        let left = wait_step(store.as_ref(), &run_id, &["a"], OWNER, 10).await;
        let right = wait_step(other.as_ref(), &run_id, &["a", "b"], "owner_other", 10).await;
        let sent = stored(
            store
                .send_signal(signal(&run_id, "a", json!(round), 11))
                .await
                .expect("send"),
        );
        let (one, two) = tokio::join!(
            store.consume_signal(consume(&sent.signal_id, &left, 12)),
            other.consume_signal(consume(&sent.signal_id, &right, 12))
        );
        let outcomes = [one.expect("left"), two.expect("right")];
        let consumed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, SignalConsume::Consumed(_)))
            .count();
        assert_eq!(consumed, 1, "round {round}: {outcomes:?}");
        let steps = store.load_steps(&run_id).await.expect("steps");
        let completed = steps.iter().filter(|s| s.state == State::Completed).count();
        assert_eq!(
            completed, 1,
            "round {round}: only the winner's step completed"
        );
    }
}

/// A parked task (pending for later) whose run has an open wait becomes due when a signal
/// that wait takes is stored, not for another name; and a signal stored while the attempt was
/// still running makes the task due when that attempt parks it.
///
/// Checks
/// [`DurableStore::send_signal`](smol_durable_core::DurableStore::send_signal),
/// [`DurableStore::finish_attempt`](smol_durable_core::DurableStore::finish_attempt).
pub async fn a_signal_for_an_open_wait_makes_a_parked_task_due_whichever_commits_first(
    fixture: Fixture,
) {
    let store = fixture.store.as_ref();
    async fn not_before(store: &dyn DurableStore, task_id: &str) -> Option<i64> {
        store
            .get_task(task_id)
            .await
            .expect("get")
            .expect("task")
            .not_before
    }
    let park = |created: &smol_durable_core::store::CreatedRun, attempt_id: String, now: i64| {
        let created = created.clone();
        async move {
            finish(
                store,
                &created,
                &attempt_id,
                OWNER,
                AttemptOutcome::Released {
                    not_before: Some(i64::MAX),
                },
                now,
            )
            .await
            .expect("park");
        }
    };
    // Signal after parking.
    let first = seed(store, ClaimScope::Runner, 0).await;
    let (task_id, run_id) = (first.task.task_id.clone(), first.run.run_id.clone());
    let attempt = started(start(store, &first, OWNER, 10_000, 10).await);
    wait_step(store, &run_id, &["go"], OWNER, 11).await;
    park(&first, attempt.attempt_id.clone(), 30).await;
    assert_eq!(not_before(store, &task_id).await, Some(i64::MAX));
    stored(
        store
            .send_signal(signal(&run_id, "other", json!(1), 40))
            .await
            .expect("send"),
    );
    assert_eq!(
        not_before(store, &task_id).await,
        Some(i64::MAX),
        "nobody waits for it"
    );
    stored(
        store
            .send_signal(signal(&run_id, "go", json!(2), 50))
            .await
            .expect("send"),
    );
    assert_eq!(not_before(store, &task_id).await, Some(50), "due now");
    // Signal before parking: the parking attempt's end finds it.
    let second = seed(store, ClaimScope::Runner, 0).await;
    let (task_id, run_id) = (second.task.task_id.clone(), second.run.run_id.clone());
    let attempt = started(start(store, &second, OWNER, 10_000, 10).await);
    wait_step(store, &run_id, &["go"], OWNER, 11).await;
    stored(
        store
            .send_signal(signal(&run_id, "go", json!(3), 20))
            .await
            .expect("send"),
    );
    park(&second, attempt.attempt_id.clone(), 30).await;
    assert_eq!(not_before(store, &task_id).await, Some(30), "due at once");
    // Nothing answering: it stays parked.
    let third = seed(store, ClaimScope::Runner, 0).await;
    let attempt = started(start(store, &third, OWNER, 10_000, 10).await);
    wait_step(store, &third.run.run_id, &["go"], OWNER, 11).await;
    stored(
        store
            .send_signal(signal(&third.run.run_id, "other", json!(4), 20))
            .await
            .expect("send"),
    );
    park(&third, attempt.attempt_id.clone(), 30).await;
    assert_eq!(not_before(store, &third.task.task_id).await, Some(i64::MAX));
}

/// Open waits are the `wait` steps that have not completed, of runs that have not finished,
/// oldest first, filtered by run and task; deleting a finished task deletes its signals.
///
/// Checks
/// [`StoreAdmin::list_open_waits`](smol_durable_core::StoreAdmin::list_open_waits),
/// [`StoreAdmin::delete_task`](smol_durable_core::StoreAdmin::delete_task).
pub async fn open_waits_are_listed_until_they_complete_and_signals_go_with_their_task(
    fixture: Fixture,
) {
    let store = fixture.store.as_ref();
    let one = seed(store, ClaimScope::Local, 0).await;
    let two = seed(store, ClaimScope::Local, 0).await;
    let first = wait_step(store, &one.run.run_id, &["a"], OWNER, 10).await;
    let second = wait_step(store, &two.run.run_id, &["b"], OWNER, 20).await;
    claimed(store, &one.run.run_id, "step:agent", OWNER, 10_000, 30).await;
    let everything = store
        .list_open_waits(&WaitFilter::default())
        .await
        .expect("waits");
    let ids: Vec<&str> = everything.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(ids, vec![first.step_id.as_str(), second.step_id.as_str()]);
    let of_two = store
        .list_open_waits(&WaitFilter {
            task_id: Some(two.task.task_id.clone()),
            ..WaitFilter::default()
        })
        .await
        .expect("by task");
    assert_eq!(of_two.len(), 1);
    assert_eq!(of_two[0].step_id, second.step_id);
    let limited = store
        .list_open_waits(&WaitFilter {
            limit: Some(1),
            ..WaitFilter::default()
        })
        .await
        .expect("limited");
    assert_eq!(limited.len(), 1);
    let sent = stored(
        store
            .send_signal(signal(&one.run.run_id, "a", json!(1), 40))
            .await
            .expect("send"),
    );
    store
        .consume_signal(consume(&sent.signal_id, &first, 41))
        .await
        .expect("consume");
    let of_one = store
        .list_open_waits(&WaitFilter {
            run_id: Some(one.run.run_id.clone()),
            ..WaitFilter::default()
        })
        .await
        .expect("by run");
    assert!(of_one.is_empty(), "a completed wait is not open");
    // A finished run has no open waits, and deleting it takes its signals along.
    let attempt = started(start(store, &two, OWNER, 10_000, 50).await);
    stored(
        store
            .send_signal(signal(&two.run.run_id, "b", json!(2), 51))
            .await
            .expect("send"),
    );
    finish(
        store,
        &two,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed { result: json!(1) },
        60,
    )
    .await
    .expect("finish");
    assert!(store
        .list_open_waits(&WaitFilter::default())
        .await
        .expect("waits")
        .is_empty());
    assert!(store.delete_task(&two.task.task_id).await.expect("delete"));
    assert!(store
        .list_signals(&two.run.run_id)
        .await
        .expect("list")
        .is_empty());
}
