//! Steps: insert-if-absent, compare-and-set claims, fenced completion and failure.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_steps_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::steps,
            $factory,
            single_flight_claim_under_16_claimers,
            expired_lease_is_reclaimed_from_another_handle,
            stale_completion_adopts_the_winner,
            stale_completion_after_reclaim_loses_its_lease,
            stored_agent_result_has_no_raw,
            sleep_wake_at_survives_reclaim,
            insert_step_is_insert_if_absent,
            claim_step_is_compare_and_set,
            failed_step_is_fenced_and_reclaimable,
            record_step_is_fenced_by_its_attempt
        );
    };
}

/// 16 concurrent claimers of one new step: exactly one runs, the rest wait, `attempts = 1`.
///
/// Checks
/// [`DurableStore::insert_step`](smol_durable_core::DurableStore::insert_step),
/// [`DurableStore::claim_step`](smol_durable_core::DurableStore::claim_step).
pub async fn single_flight_claim_under_16_claimers(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 1).await;
    let run_id = created.run.run_id.clone();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let store = if worker % 2 == 0 {
            Arc::clone(&fixture.store)
        } else {
            fixture.another_handle().await
        };
        let run_id = run_id.clone();
        // Some claimers believe the row is absent (a preloaded view), others read it first.
        let known = if worker % 3 == 0 {
            KnownRow::Absent
        } else {
            KnownRow::Unknown
        };
        tasks.push(tokio::spawn(async move {
            let sig = signature("hello");
            let worker = format!("owner_{worker}");
            acquire_step(
                store.as_ref(),
                &claim(&run_id, "step:shared", &sig, &worker, 10_000),
                known,
                100,
            )
            .await
        }));
    }
    let mut runs = 0;
    let mut waits = 0;
    for task in tasks {
        match task.await.expect("join").expect("acquire") {
            Acquired::Claimed(row) => {
                assert_eq!(row.fence, 1);
                assert_eq!(row.state, State::Running);
                runs += 1;
            }
            Acquired::Wait(row) => {
                assert_eq!(row.fence, 1);
                waits += 1;
            }
            Acquired::Replay { result, .. } => panic!("nothing completed, yet replayed {result}"),
        }
    }
    assert_eq!((runs, waits), (1, 15));
    let steps = fixture.store.load_steps(&run_id).await.expect("load_steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].fence, 1);
}

/// A step whose lease expired is reclaimed by another handle: same step id, `attempts = 2`.
///
/// Checks [`DurableStore::claim_step`](smol_durable_core::DurableStore::claim_step).
pub async fn expired_lease_is_reclaimed_from_another_handle(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let first = claimed(
        fixture.store.as_ref(),
        run_id,
        "step:lease",
        "owner_1",
        100,
        0,
    )
    .await;
    let sig = signature("hello");
    let waiting = fixture.another_handle().await;
    match acquire_step(
        waiting.as_ref(),
        &claim(run_id, "step:lease", &sig, "owner_2", 200),
        KnownRow::Unknown,
        50,
    )
    .await
    {
        Ok(Acquired::Wait(row)) => assert_eq!(row.lease_expires_at, Some(100)),
        other => panic!("a live lease must make others wait, got {other:?}"),
    }
    let reclaiming = fixture.another_handle().await;
    let second = match acquire_step(
        reclaiming.as_ref(),
        &claim(run_id, "step:lease", &sig, "owner_3", 300),
        KnownRow::Unknown,
        101,
    )
    .await
    {
        Ok(Acquired::Claimed(row)) => row,
        other => panic!("an expired lease must be reclaimed, got {other:?}"),
    };
    assert_eq!(second.step_id, first.step_id);
    assert_eq!(second.fence, 2);
    assert_eq!(second.worker_id.as_deref(), Some("owner_3"));
    assert_eq!(second.lease_expires_at, Some(300));
    let stored = fixture
        .store
        .get_step(run_id, "step:lease")
        .await
        .expect("get_step")
        .expect("row");
    assert_eq!(stored.fence, 2);
}

/// A worker whose lease was taken over, finishing after the new holder completed, adopts the
/// stored result instead of writing its own.
///
/// Checks [`DurableStore::complete_step`](smol_durable_core::DurableStore::complete_step).
pub async fn stale_completion_adopts_the_winner(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let stale = claimed(store, run_id, "step:race", "owner_old", 100, 0).await;
    let other = fixture.another_handle().await;
    let winner = claimed(other.as_ref(), run_id, "step:race", "owner_new", 1_000, 150).await;
    assert_eq!(winner.fence, 2);
    let won = complete_fenced(
        other.as_ref(),
        &winner.step_id,
        2,
        json!({"output": "new"}),
        vec![ledger(
            run_id,
            &winner.step_id,
            "agent_step",
            &winner.step_id,
            5,
        )],
        160,
    )
    .await;
    let won = won.expect("winner completes");
    assert_eq!((won.value, won.adopted), (json!({"output": "new"}), false));
    let late = complete_fenced(
        store,
        &stale.step_id,
        1,
        json!({"output": "old"}),
        vec![ledger(
            run_id,
            &stale.step_id,
            "agent_step",
            &stale.step_id,
            9,
        )],
        170,
    )
    .await;
    let late = late.expect("late finisher adopts");
    assert_eq!((late.value, late.adopted), (json!({"output": "new"}), true));
    let row = store
        .get_step(run_id, "step:race")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.result, Some(json!({"output": "new"})));
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 5);
}

/// A stale worker finishing while the new holder still runs gets `LeaseLost` and writes nothing.
///
/// Checks [`DurableStore::complete_step`](smol_durable_core::DurableStore::complete_step).
pub async fn stale_completion_after_reclaim_loses_its_lease(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let stale = claimed(store, run_id, "step:race", "owner_old", 100, 0).await;
    let winner = claimed(store, run_id, "step:race", "owner_new", 1_000, 150).await;
    let late = complete_fenced(
        store,
        &stale.step_id,
        stale.fence,
        json!({"output": "old"}),
        vec![ledger(
            run_id,
            &stale.step_id,
            "agent_step",
            &stale.step_id,
            9,
        )],
        170,
    )
    .await;
    assert!(
        matches!(late, Err(Error::LeaseLost(_))),
        "expected LeaseLost, got {late:?}"
    );
    assert_eq!(store.ledger_entries(run_id).await.expect("ledger").len(), 0);
    let row = store
        .get_step(run_id, "step:race")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.state, State::Running);
    assert_eq!(row.fence, winner.fence);
    let done = complete_fenced(
        store,
        &winner.step_id,
        winner.fence,
        json!({"output": "new"}),
        Vec::new(),
        180,
    )
    .await;
    assert_eq!(done.expect("winner").value, json!({"output": "new"}));
}

/// The engine stores an agent result without the provider's `raw` transcript, keeping
/// `output`, `sessionId`, `model` and `usage`.
///
/// Checks [`DurableStore::complete_step`](smol_durable_core::DurableStore::complete_step).
pub async fn stored_agent_result_has_no_raw(fixture: Fixture) {
    let scripts = crate::ScriptedEngine::new().workflow("raw.mjs", |ctx| async move {
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(
        crate::ScriptedProvider::new("scripted").with_usage(smol_durable_core::Usage::tokens(3, 7)),
    );
    let engine = engine_on(&fixture, &scripts, provider);
    let output = engine
        .run(scripts.source("raw.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!("echo: hello"));
    let steps = fixture
        .store
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(steps.len(), 1);
    let stored = steps[0].result.clone().expect("result");
    assert!(
        stored.get("raw").is_none(),
        "raw must not be stored: {stored}"
    );
    assert_eq!(stored["output"], json!("echo: hello"));
    assert_eq!(stored["sessionId"], json!("session-1"));
    assert_eq!(stored["model"], json!("scripted-model"));
    assert_eq!(stored["usage"]["outputTokens"], json!(7));
}

/// A sleep's `wakeAt` is fixed when its row is created and survives a reclaim.
///
/// Checks [`DurableStore::claim_step`](smol_durable_core::DurableStore::claim_step).
pub async fn sleep_wake_at_survives_reclaim(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let sig = StepSignature::sleep("root", 1_000);
    let decision = decide_step(None, &StepKind::Sleep, &sig.json, 0).expect("decide");
    assert_eq!(decision, StepDecision::Insert);
    let wake_at = sleep_wake_at(0, 1_000);
    assert_eq!(wake_at, 1_000);
    let inserted = store
        .insert_step(NewStep {
            step_id: smol_durable_core::new_id("step"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            kind: StepKind::Sleep,
            checkpoint_name: sig.base_checkpoint(),
            input_signature_hash: sig.hash.clone(),
            input_signature_json: sig.json.clone(),
            input: json!({"durationMs": 1_000, "wakeAt": wake_at}),
            worker_id: "owner_1".into(),
            lease_expires_at: 100,
            now: 0,
        })
        .await
        .expect("insert");
    assert!(matches!(inserted, InsertStep::Inserted(_)));
    let other = fixture.another_handle().await;
    let row = other
        .get_step(run_id, &sig.base_checkpoint())
        .await
        .expect("get")
        .expect("row");
    let decision = decide_step(Some(&row), &StepKind::Sleep, &sig.json, 200).expect("decide");
    let StepDecision::Reclaim {
        expected_state: state,
        expected_fence: attempts,
    } = decision
    else {
        panic!("an expired sleep lease is reclaimed, got {decision:?}")
    };
    assert_eq!(smol_durable_core::decide::wake_at(&row).ok(), Some(1_000));
    let reclaimed = other
        .claim_step(ClaimStep {
            step_id: row.step_id.clone(),
            expected_state: state,
            expected_fence: attempts,
            worker_id: "owner_2".into(),
            lease_expires_at: 5_000,
            now: 200,
        })
        .await
        .expect("claim");
    let StepCas::Applied(reclaimed) = reclaimed else {
        panic!("reclaim must apply, got {reclaimed:?}")
    };
    assert_eq!(reclaimed.fence, 2);
    assert_eq!(reclaimed.input["wakeAt"], json!(1_000));
    let done = complete_fenced(
        other.as_ref(),
        &row.step_id,
        reclaimed.fence,
        json!({"ok": true, "durationMs": 1_000, "wakeAt": 1_000, "completedAt": 1_001}),
        Vec::new(),
        1_001,
    )
    .await;
    assert!(done.is_ok());
    assert_eq!(
        store.ledger_entries(run_id).await.expect("ledger").len(),
        0,
        "sleeps are never billed"
    );
}

/// A second insert of the same `(run_id, checkpoint_name)` returns the first row untouched; the
/// signature is stored byte for byte.
///
/// Checks [`DurableStore::insert_step`](smol_durable_core::DurableStore::insert_step).
pub async fn insert_step_is_insert_if_absent(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let sig = StepSignature::agent(
        "root",
        "p",
        "héllo ✓ \"quoted\"",
        &json!({"z": 1, "a": [1, 2]}),
        Some("φ"),
        None,
    );
    let new = |worker: &str, now| NewStep {
        step_id: smol_durable_core::new_id("step"),
        run_id: run_id.clone(),
        root_run_id: run_id.clone(),
        kind: StepKind::Agent,
        checkpoint_name: sig.base_checkpoint(),
        input_signature_hash: sig.hash.clone(),
        input_signature_json: sig.json.clone(),
        input: json!({"prompt": "héllo"}),
        worker_id: worker.into(),
        lease_expires_at: now + 100,
        now,
    };
    let InsertStep::Inserted(first) = store.insert_step(new("owner_1", 1)).await.expect("insert")
    else {
        panic!("first insert inserts")
    };
    let InsertStep::Existing(second) = store.insert_step(new("owner_2", 2)).await.expect("insert")
    else {
        panic!("second insert finds the first")
    };
    assert_eq!(second, first);
    assert_eq!(first.input_signature_json, sig.json);
    assert_eq!(first.fence, 1);
    assert_eq!(first.state, State::Running);
    let other = fixture.another_handle().await;
    let loaded = other.load_steps(run_id).await.expect("load");
    assert_eq!(loaded, vec![first]);
}

/// `claim_step` writes only when state and attempts both match.
///
/// Checks [`DurableStore::claim_step`](smol_durable_core::DurableStore::claim_step).
pub async fn claim_step_is_compare_and_set(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let row = claimed(store, &created.run.run_id, "step:cas", "owner_1", 100, 0).await;
    let attempt = |state: State, attempts| ClaimStep {
        step_id: row.step_id.clone(),
        expected_state: state,
        expected_fence: attempts,
        worker_id: "owner_2".into(),
        lease_expires_at: 500,
        now: 200,
    };
    assert!(matches!(
        store
            .claim_step(attempt(State::Running, 2))
            .await
            .expect("cas"),
        StepCas::Conflict(Some(_))
    ));
    assert!(matches!(
        store
            .claim_step(attempt(State::Failed, 1))
            .await
            .expect("cas"),
        StepCas::Conflict(Some(_))
    ));
    let StepCas::Applied(now_ours) = store
        .claim_step(attempt(State::Running, 1))
        .await
        .expect("cas")
    else {
        panic!("matching CAS applies")
    };
    assert_eq!(now_ours.fence, 2);
    assert!(
        matches!(
            store
                .claim_step(attempt(State::Running, 1))
                .await
                .expect("cas"),
            StepCas::Conflict(Some(_))
        ),
        "the same CAS twice applies once"
    );
    let missing = store
        .claim_step(ClaimStep {
            step_id: "step_missing".into(),
            ..attempt(State::Running, 1)
        })
        .await;
    match missing {
        Err(error) => assert_eq!(error.kind(), StoreErrorKind::NotFound),
        Ok(StepCas::Conflict(None)) => {}
        Ok(other) => panic!("a missing step cannot be claimed: {other:?}"),
    }
}

/// Failing a step needs the fence; a failed step is reclaimed by the next claimer.
///
/// Checks [`DurableStore::fail_step`](smol_durable_core::DurableStore::fail_step).
pub async fn failed_step_is_fenced_and_reclaimable(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let row = claimed(store, run_id, "step:fail", "owner_1", 10_000, 0).await;
    let fail = |fence| FailStep {
        step_id: row.step_id.clone(),
        fence,
        state: State::Failed,
        reason: json!({"message": "nope"}),
        ledger: Vec::new(),
        now: 5,
    };
    assert!(matches!(
        store.fail_step(fail(7)).await.expect("fail"),
        StepCas::Conflict(_)
    ));
    let StepCas::Applied(failed) = store.fail_step(fail(1)).await.expect("fail") else {
        panic!("fenced fail applies")
    };
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.failure_reason, Some(json!({"message": "nope"})));
    // Failed is reclaimable at once even though the old lease had not expired.
    let again = claimed(store, run_id, "step:fail", "owner_2", 20_000, 6).await;
    assert_eq!(again.fence, 2);
    assert_eq!(again.failure_reason, None);
}

/// A deferred claim's record: the row inserted `completed` at fence 1 with its ledger rows,
/// once; a name already taken (completed, or held by another worker) is returned unchanged;
/// a deposed attempt writes nothing.
///
/// Checks [`DurableStore::record_step`](smol_durable_core::DurableStore::record_step).
pub async fn record_step_is_fenced_by_its_attempt(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let first = started(start(store, &created, "owner_first", 1_000, 10).await);
    let sig = signature("hello");
    let record = |checkpoint: &str, attempt_id: &str, output: &str, now: i64| {
        let new = claim(run_id, checkpoint, &sig, "owner_first", 1_000).new_step(now);
        let step_id = new.step_id.clone();
        RecordStep {
            step: new,
            attempt_id: attempt_id.to_owned(),
            result: json!({ "output": output }),
            ledger: vec![ledger(run_id, &step_id, "agent_step", &step_id, 3)],
            now: now + 5,
        }
    };
    let recorded = match store
        .record_step(&record("step:a", &first.attempt_id, "a", 20))
        .await
        .expect("record_step")
    {
        StepCas::Applied(row) => row,
        other => panic!("a free name under a running attempt is recorded, got {other:?}"),
    };
    assert_eq!(
        (
            recorded.state.clone(),
            recorded.fence,
            recorded.result.clone()
        ),
        (State::Completed, 1, Some(json!({"output": "a"})))
    );
    assert_eq!((recorded.created_at, recorded.updated_at), (20, 25));
    assert_eq!(recorded.lease_expires_at, None);
    let stored = store.get_step(run_id, "step:a").await.expect("get");
    assert_eq!(stored.as_ref(), Some(&recorded), "the row as returned");
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 3);

    // The name is taken: the stored row comes back, nothing else is written.
    match store
        .record_step(&record("step:a", &first.attempt_id, "again", 30))
        .await
        .expect("record_step")
    {
        StepCas::Conflict(Some(row)) => assert_eq!(row, recorded),
        other => panic!("a taken name is not recorded again, got {other:?}"),
    }
    let held = claimed(store, run_id, "step:held", "owner_other", 5_000, 40).await;
    match store
        .record_step(&record("step:held", &first.attempt_id, "held", 50))
        .await
        .expect("record_step")
    {
        StepCas::Conflict(Some(row)) => assert_eq!(row, held),
        other => panic!("a name another worker holds is not recorded, got {other:?}"),
    }
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 3);

    // A newer attempt deposes the first: its records write nothing.
    let second = started(
        start_taking_over(
            store,
            &created,
            "owner_second",
            Some("owner_first"),
            2_000,
            60,
        )
        .await,
    );
    match store
        .record_step(&record("step:late", &first.attempt_id, "late", 70))
        .await
        .expect("record_step")
    {
        StepCas::Conflict(None) => {}
        other => panic!("a deposed attempt records nothing, got {other:?}"),
    }
    assert_eq!(
        store.get_step(run_id, "step:late").await.expect("get"),
        None
    );
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 3);
    assert!(matches!(
        store
            .record_step(&record("step:late", &second.attempt_id, "late", 80))
            .await
            .expect("record_step"),
        StepCas::Applied(_)
    ));
    let steps = store.load_steps(run_id).await.expect("steps");
    let names: Vec<&str> = steps
        .iter()
        .map(|step| step.checkpoint_name.as_str())
        .collect();
    assert_eq!(
        names,
        ["step:a", "step:held", "step:late"],
        "in the order they were reached"
    );
}
