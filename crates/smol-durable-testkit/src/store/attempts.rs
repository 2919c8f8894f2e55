//! Tasks and attempts: opening, taking over, finishing, renewing leases, claiming runner tasks.
//! (Long, but one list of cases.)
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_attempts_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::attempts,
            $factory,
            attempt_numbers_increase_on_resume,
            live_task_lease_blocks_other_owners,
            takeover_expires_the_dead_owners_step_leases,
            finishing_an_attempt_is_fenced_by_owner,
            completed_task_is_never_restarted,
            renewal_reports_lost_steps,
            a_deposed_owner_renews_no_step_leases,
            unfinished_children_end_with_their_attempt,
            local_tasks_are_never_claimed_by_runners,
            runner_tasks_stop_after_max_attempts,
            zero_max_attempts_means_one_attempt,
            released_attempts_do_not_use_up_max_attempts
        );
    };
}

/// Attempt numbers are `max + 1` per task: 1, 2, 3 across resumes.
///
/// Checks [`DurableStore::start_attempt`](smol_durable_core::DurableStore::start_attempt).
pub async fn attempt_numbers_increase_on_resume(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let first = started(start(store, &created, OWNER, 100, 0).await);
    assert_eq!(first.attempt, 1);
    finish(
        store,
        &created,
        &first.attempt_id,
        OWNER,
        AttemptOutcome::Failed {
            reason: json!({"message": "boom"}),
            retry_at: None,
        },
        10,
    )
    .await
    .expect("finish");
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.state, State::Failed);
    assert_eq!(run.failure_reason, Some(json!({"message": "boom"})));
    let second = started(start(store, &created, OWNER, 200, 20).await);
    assert_eq!(second.attempt, 2);
    // A third start while the second is still running (its process died) abandons it.
    let third = started(start(store, &created, OWNER, 300, 30).await);
    assert_eq!(third.attempt, 3);
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(attempts[0].state, State::Failed);
    assert_eq!(
        attempts[1].state,
        State::Failed,
        "the abandoned attempt is closed"
    );
    assert_eq!(attempts[2].state, State::Running);
}

/// A live task lease keeps other owners out until it expires.
///
/// Checks [`DurableStore::start_attempt`](smol_durable_core::DurableStore::start_attempt).
pub async fn live_task_lease_blocks_other_owners(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    started(start(store, &created, "owner_a", 100, 0).await);
    let other = fixture.another_handle().await;
    match start(other.as_ref(), &created, "owner_b", 300, 50).await {
        AttemptStart::Busy {
            owner_id,
            lease_expires_at,
        } => {
            assert_eq!(owner_id, "owner_a");
            assert_eq!(lease_expires_at, 100);
        }
        outcome => panic!("a live lease must block, got {outcome:?}"),
    }
    let second = started(start(other.as_ref(), &created, "owner_b", 300, 100).await);
    assert_eq!(second.attempt, 2);
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.claimed_by_owner_id.as_deref(), Some("owner_b"));
    assert_eq!(
        task.submitted_by_owner_id.as_deref(),
        Some("owner_b"),
        "a local task is adopted by its resumer"
    );
}

/// Taking over from a dead owner is immediate and makes its running steps reclaimable at once.
///
/// Checks [`DurableStore::start_attempt`](smol_durable_core::DurableStore::start_attempt).
pub async fn takeover_expires_the_dead_owners_step_leases(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    started(start(store, &created, "owner_dead", 60_000, 0).await);
    let held = claimed(store, run_id, "step:held", "owner_dead", 60_000, 0).await;
    let takeover = start_taking_over(
        store,
        &created,
        "owner_new",
        Some("owner_dead"),
        61_000,
        1_000,
    )
    .await;
    let attempt = started(takeover);
    assert_eq!(attempt.attempt, 2);
    let again = claimed(store, run_id, "step:held", "owner_new", 61_000, 1_000).await;
    assert_eq!(again.step_id, held.step_id);
    assert_eq!(again.fence, 2);
}

/// Finishing an attempt after another owner took the task over fails with `LeaseLost`.
///
/// Checks [`DurableStore::finish_attempt`](smol_durable_core::DurableStore::finish_attempt).
pub async fn finishing_an_attempt_is_fenced_by_owner(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let first = started(start(store, &created, "owner_a", 100, 0).await);
    started(start(store, &created, "owner_b", 500, 200).await);
    let late = finish(
        store,
        &created,
        &first.attempt_id,
        "owner_a",
        AttemptOutcome::Completed {
            result: json!("late"),
        },
        210,
    )
    .await;
    match late {
        Err(error) => assert_eq!(error.kind(), StoreErrorKind::LeaseLost),
        Ok(()) => panic!("a stale owner must not finish the attempt"),
    }
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.state, State::Running);
    assert_eq!(run.completed_payload, None);
}

/// A completed task never starts again; failed/cancelled ones only when reviving.
///
/// Checks [`DurableStore::start_attempt`](smol_durable_core::DurableStore::start_attempt).
pub async fn completed_task_is_never_restarted(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &created, OWNER, 100, 0).await);
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed {
            result: json!({"ok": true}),
        },
        5,
    )
    .await
    .expect("finish");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Completed);
    assert_eq!(task.completed_payload, Some(json!({"ok": true})));
    assert!(matches!(
        start(store, &created, OWNER, 200, 10).await,
        AttemptStart::Finished(State::Completed)
    ));
    let failed = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &failed, OWNER, 100, 0).await);
    finish(
        store,
        &failed,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Failed {
            reason: json!({"message": "x"}),
            retry_at: None,
        },
        5,
    )
    .await
    .expect("finish");
    let no_revive = store
        .start_attempt(StartAttempt {
            attempt_id: smol_durable_core::new_id("attempt"),
            task_id: failed.task.task_id.clone(),
            run_id: failed.run.run_id.clone(),
            owner_id: OWNER.into(),
            lease_expires_at: 100,
            take_over_from: None,
            revive: false,
            now: 6,
        })
        .await
        .expect("start");
    assert!(matches!(no_revive, AttemptStart::Finished(State::Failed)));
}

/// Renewal extends held step leases and reports the steps whose fence moved on.
///
/// Checks [`DurableStore::renew_leases`](smol_durable_core::DurableStore::renew_leases).
pub async fn renewal_reports_lost_steps(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let attempt = started(start(store, &created, OWNER, 100, 0).await);
    let kept = claimed(store, run_id, "step:kept", OWNER, 100, 0).await;
    let lost = claimed(store, run_id, "step:lost", OWNER, 100, 0).await;
    let _thief = claimed(store, run_id, "step:lost", "owner_thief", 1_000, 150).await;
    let outcome = store
        .renew_leases(RenewLeases {
            owner_id: OWNER.into(),
            task_id: created.task.task_id.clone(),
            attempt_id: attempt.attempt_id.clone(),
            run_id: run_id.clone(),
            lease_expires_at: 400,
            steps: vec![
                StepLease {
                    step_id: kept.step_id.clone(),
                    fence: 1,
                    lease_expires_at: 400,
                },
                StepLease {
                    step_id: lost.step_id.clone(),
                    fence: 1,
                    lease_expires_at: 400,
                },
            ],
            now: 160,
        })
        .await
        .expect("renew");
    assert!(outcome.task_held);
    assert_eq!(outcome.lost_steps, vec![lost.step_id.clone()]);
    let kept_row = store
        .get_step(run_id, "step:kept")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(kept_row.lease_expires_at, Some(400));
    let lost_row = store
        .get_step(run_id, "step:lost")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        lost_row.lease_expires_at,
        Some(1_000),
        "a lost step's lease is not touched"
    );
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.lease_expires_at, Some(400));
}

/// After a takeover, the old owner's heartbeat renews none of its step leases (its successor
/// expired them so it can reclaim at once) and reports them lost.
///
/// Checks [`DurableStore::renew_leases`](smol_durable_core::DurableStore::renew_leases).
pub async fn a_deposed_owner_renews_no_step_leases(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let old = started(start(store, &created, "owner_old", 60_000, 0).await);
    let step = claimed(store, run_id, "step:held", "owner_old", 60_000, 0).await;
    started(
        start_taking_over(
            store,
            &created,
            "owner_new",
            Some("owner_old"),
            61_000,
            1_000,
        )
        .await,
    );
    let renewed = store
        .renew_leases(RenewLeases {
            owner_id: "owner_old".into(),
            task_id: created.task.task_id.clone(),
            attempt_id: old.attempt_id.clone(),
            run_id: run_id.clone(),
            lease_expires_at: 70_000,
            steps: vec![StepLease {
                step_id: step.step_id.clone(),
                fence: 1,
                lease_expires_at: 70_000,
            }],
            now: 1_001,
        })
        .await
        .expect("renew");
    assert!(!renewed.task_held);
    assert_eq!(renewed.lost_steps, vec![step.step_id.clone()]);
    let row = store
        .get_step(run_id, "step:held")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        row.lease_expires_at,
        Some(1_000),
        "the takeover's expiry stands"
    );
}

/// Child runs still unfinished when their attempt ends end with it.
///
/// Checks [`DurableStore::finish_attempt`](smol_durable_core::DurableStore::finish_attempt).
pub async fn unfinished_children_end_with_their_attempt(fixture: Fixture) {
    let store = fixture.store.as_ref();
    for (outcome, expected) in [
        (
            AttemptOutcome::Failed {
                reason: json!({"message": "x"}),
                retry_at: None,
            },
            State::Failed,
        ),
        (
            AttemptOutcome::Cancelled {
                reason: json!({"message": "workflow cancelled"}),
            },
            State::Cancelled,
        ),
    ] {
        let created = seed(store, ClaimScope::Local, 0).await;
        let attempt = started(start(store, &created, OWNER, 100, 0).await);
        let child = store
            .create_child_run(NewChildRun {
                run_id: smol_durable_core::new_id("run"),
                task_id: created.task.task_id.clone(),
                root_run_id: created.run.run_id.clone(),
                parent_run_id: created.run.run_id.clone(),
                parent_step_id: "step_parent".into(),
                workflow: WorkflowInfo::new(),
                args: json!({}),
                now: 1,
            })
            .await
            .expect("child");
        finish(store, &created, &attempt.attempt_id, OWNER, outcome, 5)
            .await
            .expect("finish");
        let child = store
            .get_run(&child.run_id)
            .await
            .expect("get")
            .expect("child");
        assert_eq!(child.state, expected);
    }
}

/// Runner claims take the oldest eligible `runner` task and never a `local` one.
///
/// Checks [`DurableStore::claim_next_task`](smol_durable_core::DurableStore::claim_next_task).
pub async fn local_tasks_are_never_claimed_by_runners(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let _local = seed(store, ClaimScope::Local, 0).await;
    let older = seed(store, ClaimScope::Runner, 1).await;
    let newer = seed(store, ClaimScope::Runner, 2).await;
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.into(),
        attempt_id: smol_durable_core::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store
        .claim_next_task(next("owner_a", 10))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(first.task.task_id, older.task.task_id);
    assert_eq!(first.attempt.attempt, 1);
    assert_eq!(first.task.claimed_by_owner_id.as_deref(), Some("owner_a"));
    let other = fixture.another_handle().await;
    let second = other
        .claim_next_task(next("owner_b", 11))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(second.task.task_id, newer.task.task_id);
    assert!(
        store
            .claim_next_task(next("owner_c", 12))
            .await
            .expect("claim")
            .is_none(),
        "local tasks and held tasks are not claimable"
    );
    // Once the first lease expires, its task is claimable again, as attempt 2.
    let reclaimed = store
        .claim_next_task(next("owner_c", 111))
        .await
        .expect("claim")
        .expect("expired task");
    assert_eq!(reclaimed.task.task_id, older.task.task_id);
    assert_eq!(reclaimed.attempt.attempt, 2);
    assert!(store
        .claim_next_task(ClaimNextTask {
            scope: ClaimScope::Local,
            ..next("owner_d", 112)
        })
        .await
        .is_ok());
}

/// A runner task whose workers keep dying gets at most `max_attempts` attempts, then fails.
///
/// Checks [`DurableStore::claim_next_task`](smol_durable_core::DurableStore::claim_next_task).
pub async fn runner_tasks_stop_after_max_attempts(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 2;
    let created = store.create_run(new).await.expect("create");
    let next = |now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: format!("owner_{now}"),
        attempt_id: smol_durable_core::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store
        .claim_next_task(next(10))
        .await
        .expect("claim")
        .expect("attempt 1");
    assert_eq!((first.attempt.attempt, first.failed_attempts), (1, 0));
    let second = store
        .claim_next_task(next(200))
        .await
        .expect("claim")
        .expect("attempt 2");
    assert_eq!((second.attempt.attempt, second.failed_attempts), (2, 1));
    assert!(store
        .claim_next_task(next(400))
        .await
        .expect("claim")
        .is_none());
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Failed);
    assert_eq!(
        task.failure_reason,
        Some(json!({"message": "gave up after 2 attempts"}))
    );
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert!(attempts.iter().all(|a| a.state == State::Failed));
}

/// `max_attempts: 0` allows one attempt, like 1 ([`decide::claim_verdict`]; a store may also
/// store it as 1); the task then closes with the core's reason.
///
/// [`decide::claim_verdict`]: smol_durable_core::decide::claim_verdict
///
/// Checks [`DurableStore::claim_next_task`](smol_durable_core::DurableStore::claim_next_task).
pub async fn zero_max_attempts_means_one_attempt(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 0;
    let created = store.create_run(new).await.expect("create");
    let next = |now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: format!("owner_{now}"),
        attempt_id: smol_durable_core::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store.claim_next_task(next(10)).await.expect("claim");
    assert_eq!(first.map(|claimed| claimed.attempt.attempt), Some(1));
    let other = fixture.another_handle().await;
    assert!(other
        .claim_next_task(next(200))
        .await
        .expect("claim")
        .is_none());
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    let closure = smol_durable_core::decide::Closure::out_of_attempts(1);
    assert_eq!(
        (task.state, task.failure_reason),
        (closure.state, Some(closure.reason))
    );
}

/// An attempt its owner hands back (shutdown, or parked until a sleep's `wakeAt`) leaves the
/// task `pending`, is not claimable before `not_before`, and does not count against
/// `max_attempts`; attempts abandoned by dead owners do.
///
/// Checks
/// [`DurableStore::finish_attempt`](smol_durable_core::DurableStore::finish_attempt),
/// [`DurableStore::claim_next_task`](smol_durable_core::DurableStore::claim_next_task).
pub async fn released_attempts_do_not_use_up_max_attempts(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 2;
    let created = store.create_run(new).await.expect("create");
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.to_owned(),
        attempt_id: smol_durable_core::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let claim = |owner: &'static str, now: i64| store.claim_next_task(next(owner, now));
    let first = claim("owner_a", 10)
        .await
        .expect("claim")
        .expect("attempt 1");
    finish(
        store,
        &created,
        &first.attempt.attempt_id,
        "owner_a",
        AttemptOutcome::Released {
            not_before: Some(500),
        },
        20,
    )
    .await
    .expect("park");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(
        (task.state, task.not_before, task.claimed_by_owner_id),
        (State::Pending, Some(500), None)
    );
    assert!(
        claim("owner_b", 499).await.expect("claim").is_none(),
        "not before wakeAt"
    );
    let second = claim("owner_b", 500)
        .await
        .expect("claim")
        .expect("attempt 2");
    finish(
        store,
        &created,
        &second.attempt.attempt_id,
        "owner_b",
        AttemptOutcome::Released { not_before: None },
        510,
    )
    .await
    .expect("release");
    // Two attempts so far, both handed back: a third may start, and then a fourth after the
    // third's owner dies (its lease expires); the fourth's death uses up the allowance.
    let third = claim("owner_c", 520)
        .await
        .expect("claim")
        .expect("attempt 3");
    assert_eq!((third.attempt.attempt, third.failed_attempts), (3, 0));
    let fourth = claim("owner_d", 700)
        .await
        .expect("claim")
        .expect("attempt 4");
    assert_eq!(
        (fourth.attempt.attempt, fourth.failed_attempts),
        (4, 1),
        "the third attempt's owner died"
    );
    assert!(claim("owner_e", 900).await.expect("claim").is_none());
    let states: Vec<State> = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts")
        .into_iter()
        .map(|attempt| attempt.state)
        .collect();
    assert_eq!(
        states,
        vec![
            State::Cancelled,
            State::Cancelled,
            State::Failed,
            State::Failed
        ]
    );
}
