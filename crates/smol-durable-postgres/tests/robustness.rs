//! What PostgreSQL does not forgive: transactions left open, and JSON it cannot store.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use smol_durable_core::StoreAdmin;
use std::time::Duration;

use serde_json::json;
use smol_durable_core::store::{CancelRequest, ClaimScope, CreatedRun, NewRun, WorkflowInfo};
use smol_durable_core::DurableStore;
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_testkit::postgres_test_url;
use sqlx::{Connection, PgConnection};

/// A store in a fresh schema of the test server with one run in it.
async fn one_run(test: &str, scope: ClaimScope) -> (String, String, PostgresStore, CreatedRun) {
    let url = postgres_test_url(test);
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = PostgresStore::connect_with(PostgresOptions::new(&url).schema(schema.as_str()))
        .await
        .expect("connect");
    let created = store
        .create_run(NewRun::new(
            scope,
            "owner_a",
            WorkflowInfo::new(),
            json!({}),
            1,
        ))
        .await
        .expect("create");
    (url, schema, store, created)
}

/// A caller that stops waiting for an operation (a cancelled script, an aborted heartbeat, a
/// timeout) must not leave a transaction half done on a pooled connection, holding row locks
/// that make `SKIP LOCKED` claims pass the task by forever.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_abandoned_mid_transaction_still_ends_cleanly() {
    let (url, schema, store, created) = one_run("abandoned operations", ClaimScope::Runner).await;
    // Another session holds the task row, so `request_cancel` blocks inside its transaction.
    let mut blocker = PgConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut blocker)
        .await
        .expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {schema}.sw_workflow_tasks WHERE task_id = $1 FOR UPDATE"
    )))
    .bind(&created.task.task_id)
    .execute(&mut blocker)
    .await
    .expect("lock");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        store.request_cancel(&created.run.run_id, 2),
    )
    .await;
    assert!(gave_up.is_err(), "the operation was blocked, and abandoned");
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("rollback");
    // The abandoned operation ran to its end on its own: the pending task is cancelled, and
    // nothing holds its row any more.
    let mut cancelled = false;
    for _ in 0..100 {
        let task = store
            .get_task(&created.task.task_id)
            .await
            .expect("get")
            .expect("task");
        if task.state == smol_durable_core::store::State::Cancelled {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cancelled, "the abandoned cancellation completed");
    let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {schema}.sw_workflow_tasks WHERE task_id = $1 FOR UPDATE NOWAIT"
    )))
    .bind(&created.task.task_id)
    .execute(&mut blocker)
    .await;
    assert!(
        locked.is_ok(),
        "a row lock outlived the operation: {locked:?}"
    );
    let idle_in_transaction: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
         AND pid <> pg_backend_pid() AND datname = current_database()",
    )
    .fetch_one(&mut blocker)
    .await
    .expect("activity");
    assert_eq!(idle_in_transaction, 0, "a transaction was left open");
    assert_eq!(
        store
            .request_cancel(&created.run.run_id, 3)
            .await
            .expect("cancel"),
        CancelRequest::AlreadyFinished(smol_durable_core::store::State::Cancelled)
    );
}

/// A client frozen mid-transaction is cut off by the server well within a lease.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_transactions_are_ended_by_the_server() {
    let url = postgres_test_url("idle transactions");
    let store = PostgresStore::connect(&url).await.expect("connect");
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(timeout, "30s");
}

/// JSONB cannot hold U+0000: an event carrying one is stored with U+FFFD instead, and the
/// other events of its batch are stored as they are.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_nul_character_is_stored() {
    let (_, _, store, created) = one_run("NUL in events", ClaimScope::Local).await;
    let event = |text: &str| {
        smol_durable_core::store::EventRow::from(&smol_durable_core::store::NewEvent {
            event_id: smol_durable_core::new_id("evt"),
            run_id: created.run.run_id.clone(),
            root_run_id: created.run.run_id.clone(),
            attempt_id: None,
            step_id: None,
            event_type: smol_durable_core::EventType::Log,
            payload: json!({ "message": text }),
            created_at: 2,
        })
    };
    store
        .append_events(&[event("before"), event("a\u{0}b"), event("after")])
        .await
        .expect("append");
    let stored = store
        .read_events(&created.run.run_id, 0, 10)
        .await
        .expect("read");
    let messages: Vec<&str> = stored
        .iter()
        .map(|e| e.payload["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(messages, vec!["before", "a\u{fffd}b", "after"]);
}

/// A step result JSONB cannot hold fails with a clear, non-retryable error instead of a
/// driver message; nothing is half written.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_with_a_nul_character_is_refused_clearly() {
    use smol_durable_core::store::{CompleteStep, InsertStep, NewStep, StepKind};
    let (_, _, store, created) = one_run("NUL in results", ClaimScope::Local).await;
    let inserted = store
        .insert_step(NewStep {
            step_id: smol_durable_core::new_id("step"),
            run_id: created.run.run_id.clone(),
            root_run_id: created.run.run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: "agent:x".into(),
            input_signature_hash: "x".into(),
            input_signature_json: "{}".into(),
            input: json!({}),
            worker_id: "owner_a".into(),
            lease_expires_at: 100,
            now: 2,
        })
        .await
        .expect("insert");
    let InsertStep::Inserted(step) = inserted else {
        panic!("inserted")
    };
    let error = store
        .complete_step(CompleteStep {
            step_id: step.step_id.clone(),
            fence: 1,
            result: json!({ "output": "a\u{0}b" }),
            ledger: Vec::new(),
            now: 3,
        })
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), smol_durable_core::StoreErrorKind::Unsupported);
    assert!(error.to_string().contains("U+0000"), "{error}");
    assert!(!error.is_retryable());
    let row = store
        .get_step(&created.run.run_id, "agent:x")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        row.state,
        smol_durable_core::store::State::Running,
        "nothing written"
    );
}

/// Records that queue up together are written in one transaction, each with its own answer:
/// a free name is recorded, a taken one comes back as it stands, and one that PostgreSQL
/// refuses (a NUL in its result) fails alone — the others of its batch are still recorded.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_together_keep_their_own_outcomes() {
    use smol_durable_core::store::{
        AttemptStart, NewStep, RecordStep, StartAttempt, State, StepCas, StepKind,
    };
    let (_, _, store, created) = one_run("grouped records", ClaimScope::Local).await;
    let run_id = created.run.run_id.clone();
    let started = store
        .start_attempt(StartAttempt {
            attempt_id: smol_durable_core::new_id("attempt"),
            task_id: created.task.task_id.clone(),
            run_id: run_id.clone(),
            owner_id: "owner_a".into(),
            lease_expires_at: i64::MAX,
            take_over_from: None,
            revive: false,
            now: 2,
        })
        .await
        .expect("start");
    let AttemptStart::Started(attempt) = started else {
        panic!("started: {started:?}")
    };
    let record = |checkpoint: String, output: &str| RecordStep {
        step: NewStep {
            step_id: smol_durable_core::new_id("step"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: checkpoint,
            input_signature_hash: "x".into(),
            input_signature_json: "{}".into(),
            input: json!({}),
            worker_id: "owner_a".into(),
            lease_expires_at: 100,
            now: 3,
        },
        attempt_id: attempt.attempt_id.clone(),
        result: json!({ "output": output }),
        ledger: Vec::new(),
        now: 4,
    };
    // Many at once, so most queue behind the first and go out together; "agent:7" twice.
    let mut records: Vec<RecordStep> = (0..40)
        .map(|i| record(format!("agent:{i}"), "fine"))
        .collect();
    records.push(record("agent:7".into(), "second"));
    records.push(record("agent:nul".into(), "a\u{0}b"));
    let outcomes = futures::future::join_all(records.iter().map(|r| store.record_step(r))).await;
    let (mut applied, mut taken, mut refused) = (0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(StepCas::Applied(row)) => {
                assert_eq!((row.state, row.fence), (State::Completed, 1));
                applied += 1;
            }
            Ok(StepCas::Conflict(Some(row))) => {
                assert_eq!(row.checkpoint_name, "agent:7");
                assert_eq!(row.result, Some(json!({ "output": "fine" })));
                taken += 1;
            }
            Err(error) => {
                assert_eq!(error.kind(), smol_durable_core::StoreErrorKind::Unsupported);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((applied, taken, refused), (40, 1, 1));
    let steps = store.load_steps(&run_id).await.expect("steps");
    assert_eq!(steps.len(), 40);
}

/// The store keeps connections between its operations; a caller waiting on the same pool (the
/// listener reconnecting, a host application sharing it) must still be served while the
/// store is busy, not only once the store falls idle.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_the_pool_is_served_while_the_store_is_busy() {
    let url = postgres_test_url("pool waiters");
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = PostgresStore::connect_with(
        PostgresOptions::new(&url)
            .schema(schema.as_str())
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(20)),
    )
    .await
    .expect("connect");
    let created = store
        .create_run(NewRun::new(
            ClaimScope::Local,
            "owner_a",
            WorkflowInfo::new(),
            json!({}),
            1,
        ))
        .await
        .expect("create");
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (store, busy, run_id) = (
                store.clone(),
                std::sync::Arc::clone(&busy),
                created.run.run_id.clone(),
            );
            tokio::spawn(async move {
                let mut reads = 0_u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    store.get_run(&run_id).await.expect("read");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let waited = std::time::Instant::now();
        let connection = tokio::time::timeout(Duration::from_secs(5), store.pool().acquire())
            .await
            .expect("a waiter is served while the store is busy")
            .expect("acquire");
        drop(connection);
        assert!(waited.elapsed() < Duration::from_secs(5));
    }
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(
            reader.await.expect("reader") > 0,
            "every reader got through"
        );
    }
}
