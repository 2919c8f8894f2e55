//! Cancellation requests: recorded, seen through another handle, immediate when nobody runs the
//! task.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_cancellation_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::cancellation,
            $factory,
            cancellation_is_seen_through_another_handle,
            cancelling_a_pending_task_is_immediate,
            cancelling_a_task_whose_owner_is_gone_is_immediate,
            a_claim_never_clears_a_cancellation_request
        );
    };
}

/// A cancellation requested through one handle is reported to the owner's heartbeat through
/// another.
///
/// Checks
/// [`DurableStore::request_cancel`](smol_durable_core::DurableStore::request_cancel),
/// [`DurableStore::renew_leases`](smol_durable_core::DurableStore::renew_leases).
pub async fn cancellation_is_seen_through_another_handle(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &created, OWNER, 10_000, 0).await);
    let renew = |now| RenewLeases {
        owner_id: OWNER.into(),
        task_id: created.task.task_id.clone(),
        attempt_id: attempt.attempt_id.clone(),
        run_id: created.run.run_id.clone(),
        lease_expires_at: now + 10_000,
        steps: Vec::new(),
        now,
    };
    let before = store.renew_leases(renew(1)).await.expect("renew");
    assert!(before.task_held);
    assert!(!before.cancel_requested);
    let other = fixture.another_handle().await;
    assert_eq!(
        other
            .request_cancel(&created.run.run_id, 5)
            .await
            .expect("cancel"),
        CancelRequest::Requested
    );
    let after = store.renew_leases(renew(6)).await.expect("renew");
    assert!(after.cancel_requested);
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.cancel_requested_at, Some(5));
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Cancelled {
            reason: json!({"message": "workflow cancelled"}),
        },
        7,
    )
    .await
    .expect("finish");
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Cancelled);
    let attempts = other
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].state, State::Cancelled);
    assert_eq!(
        other
            .request_cancel(&created.run.run_id, 8)
            .await
            .expect("cancel"),
        CancelRequest::AlreadyFinished(State::Cancelled)
    );
    assert_eq!(
        other.request_cancel("run_nope", 8).await.expect("cancel"),
        CancelRequest::NotFound
    );
}

/// Cancelling a task nobody executes yet cancels task and run at once.
///
/// Checks [`DurableStore::request_cancel`](smol_durable_core::DurableStore::request_cancel).
pub async fn cancelling_a_pending_task_is_immediate(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Runner, 0).await;
    assert_eq!(
        store
            .request_cancel(&created.run.run_id, 3)
            .await
            .expect("cancel"),
        CancelRequest::CancelledPending
    );
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(
        (run.state, task.state),
        (State::Cancelled, State::Cancelled)
    );
    let claim = store
        .claim_next_task(ClaimNextTask {
            scope: ClaimScope::Runner,
            owner_id: "owner_w".into(),
            attempt_id: smol_durable_core::new_id("attempt"),
            lease_expires_at: 100,
            now: 4,
        })
        .await
        .expect("claim");
    assert!(claim.is_none(), "a cancelled task is not claimable");
}

/// A running task whose lease expired has nobody to notice a cancellation: it is cancelled at
/// once, with its attempt.
///
/// Checks [`DurableStore::request_cancel`](smol_durable_core::DurableStore::request_cancel).
pub async fn cancelling_a_task_whose_owner_is_gone_is_immediate(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    started(start(store, &created, "owner_gone", 100, 0).await);
    let outcome = store
        .request_cancel(&created.run.run_id, 200)
        .await
        .expect("cancel");
    assert_eq!(outcome, CancelRequest::CancelledPending);
    let (run, task) = (
        store
            .get_run(&created.run.run_id)
            .await
            .expect("get")
            .expect("run"),
        store
            .get_task(&created.task.task_id)
            .await
            .expect("get")
            .expect("task"),
    );
    assert_eq!(
        (run.state, task.state),
        (State::Cancelled, State::Cancelled)
    );
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].state, State::Cancelled);
}

/// A cancellation requested while a worker held the task survives that worker's death: the next
/// claim ends the task as cancelled instead of running it again.
///
/// Checks
/// [`DurableStore::claim_next_task`](smol_durable_core::DurableStore::claim_next_task),
/// [`DurableStore::start_attempt`](smol_durable_core::DurableStore::start_attempt).
pub async fn a_claim_never_clears_a_cancellation_request(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Runner, 0).await;
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.into(),
        attempt_id: smol_durable_core::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    store
        .claim_next_task(next("owner_a", 10))
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(
        store
            .request_cancel(&created.run.run_id, 50)
            .await
            .expect("cancel"),
        CancelRequest::Requested
    );
    let other = fixture.another_handle().await;
    assert!(other
        .claim_next_task(next("owner_b", 200))
        .await
        .expect("claim")
        .is_none());
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    let run = other
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        (task.state, run.state),
        (State::Cancelled, State::Cancelled)
    );
}
