//! Bad rows, locked databases and unusable paths give clear errors and lose nothing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde_json::{json, Value};
use smol_durable_core::store::{ClaimScope, NewRun, WorkflowInfo};
use smol_durable_core::{DurableStore, Engine, Error, ResumeOptions, StoreAdmin, StoreErrorKind};
use smol_durable_sqlite::{SqliteOptions, SqliteStore};
use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};

async fn store_with_one_run(dir: &tempfile::TempDir) -> (SqliteStore, String) {
    let store = SqliteStore::open(dir.path().join("faults.db"))
        .await
        .expect("open");
    let created = store
        .create_run(NewRun::new(
            ClaimScope::Local,
            "owner_test",
            WorkflowInfo::new(),
            json!({}),
            1,
        ))
        .await
        .expect("create");
    (store, created.run.run_id)
}

/// Writes a step row bypassing the schema's checks, as a bug or a bad disk might leave it.
fn corrupt_step(path: &std::path::Path, run_id: &str, kind: &str, state: &str, result_json: &str) {
    let db = Connection::open(path).expect("open raw");
    db.pragma_update(None, "ignore_check_constraints", "ON")
        .expect("pragma");
    db.execute(
        "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, input_signature_hash, input_signature_json, state, input_json, result_json, attempts, created_at, updated_at)
         VALUES ('step_bad', ?1, ?1, ?2, 'step:sig_bad', 'bad', '{}', ?3, '{}', ?4, 1, 1, 1)",
        params![run_id, kind, state, result_json],
    )
    .expect("insert bad row");
}

#[tokio::test]
async fn invalid_json_names_table_row_and_column() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, run_id) = store_with_one_run(&dir).await;
    corrupt_step(
        &dir.path().join("faults.db"),
        &run_id,
        "agent",
        "completed",
        "{not json",
    );
    let error = store.load_steps(&run_id).await.expect_err("corrupt row");
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    let message = error.to_string();
    assert!(
        message.contains("sw_workflow_steps row step_bad"),
        "{message}"
    );
    assert!(
        message.contains("column result_json holds invalid JSON"),
        "{message}"
    );
    let error = store
        .get_step(&run_id, "step:sig_bad")
        .await
        .expect_err("corrupt row");
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
}

#[tokio::test]
async fn unknown_step_kind_and_state_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, run_id) = store_with_one_run(&dir).await;
    corrupt_step(
        &dir.path().join("faults.db"),
        &run_id,
        "timer",
        "paused",
        "null",
    );
    let row = store
        .get_step(&run_id, "step:sig_bad")
        .await
        .expect("read")
        .expect("row");
    let error = smol_durable_core::decide::decide_step(
        Some(&row),
        &smol_durable_core::store::StepKind::Agent,
        "{}",
        0,
    )
    .expect_err("unknown kind");
    let message = error.to_string();
    assert!(
        message.contains("unsupported step kind \"timer\""),
        "{message}"
    );
    assert!(
        message.contains("in stored step step_bad (step:sig_bad)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_corrupt_step_fails_the_resume_clearly_and_changes_nothing_else() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("resume.db");
    let store = Arc::new(SqliteStore::open(&path).await.expect("open"));
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        ctx.agent("hello", Value::Null).await?;
        Err(smol_durable_core::ScriptError::thrown("stop here"))
    });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = Engine::builder()
        .store(store.clone())
        .script_engine(Arc::new(scripts.clone()))
        .provider(provider.clone())
        .build()
        .expect("engine");
    engine
        .run(scripts.source("main.mjs"), json!({}))
        .await
        .expect_err("first attempt fails");
    let run_id = store.list_runs(&Default::default()).await.expect("list")[0]
        .run_id
        .clone();
    {
        let db = Connection::open(&path).expect("raw");
        db.pragma_update(None, "ignore_check_constraints", "ON")
            .expect("pragma");
        db.execute(
            "UPDATE sw_workflow_steps SET result_json = '{\"output\": tru' WHERE run_id = ?1",
            [&run_id],
        )
        .expect("corrupt");
    }
    let error = match engine.resume(&run_id, ResumeOptions::new()).await {
        Ok(handle) => handle.join().await.expect_err("corrupt"),
        Err(error) => error,
    };
    assert!(
        matches!(&error, Error::Store(e) if e.kind() == StoreErrorKind::Corrupt),
        "{error:?}"
    );
    assert!(error.to_string().contains("column result_json"), "{error}");
    assert_eq!(
        provider.call_count(),
        1,
        "a corrupt row is never silently re-run"
    );
}

#[tokio::test]
async fn a_database_locked_past_the_busy_timeout_is_a_retryable_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("locked.db");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions::default().busy_timeout(Duration::from_millis(150)),
    )
    .await
    .expect("open");
    let holder = Connection::open(&path).expect("other connection");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let started = std::time::Instant::now();
    let error = store
        .create_run(NewRun::new(
            ClaimScope::Local,
            "owner_test",
            WorkflowInfo::new(),
            json!({}),
            1,
        ))
        .await
        .expect_err("locked");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "waited for the busy timeout"
    );
    assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    assert!(error.is_retryable());
    assert!(error.to_string().contains("locked"), "{error}");
    holder.execute_batch("ROLLBACK").expect("release");
    // The same call succeeds once the lock is gone: nothing was half-written.
    store
        .create_run(NewRun::new(
            ClaimScope::Local,
            "owner_test",
            WorkflowInfo::new(),
            json!({}),
            2,
        ))
        .await
        .expect("after the lock");
    assert_eq!(
        store
            .list_runs(&Default::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("no/such/dir/runs.db");
    let error = SqliteStore::open(&path)
        .await
        .expect_err("missing directory");
    assert!(error.to_string().contains("is not accessible"), "{error}");
    assert!(error.to_string().contains("no/such/dir"), "{error}");
    assert!(
        !error.is_retryable(),
        "a missing directory does not come back by itself"
    );
    assert!(!dir.path().join("no").exists(), "nothing is created");
}

#[tokio::test]
async fn a_read_only_directory_is_a_clear_error_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let error = SqliteStore::open(locked.join("runs.db"))
        .await
        .expect_err("read-only");
    assert!(error.to_string().contains("read-only"), "{error}");
    assert!(!error.is_retryable(), "{error}");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notes.txt");
    let content = "these are not the pages you are looking for".repeat(100);
    std::fs::write(&path, &content).expect("write");
    let error = SqliteStore::open(&path).await.expect_err("not a database");
    assert!(
        matches!(
            error.kind(),
            StoreErrorKind::Corrupt | StoreErrorKind::Unavailable | StoreErrorKind::Other
        ),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        content,
        "the file is untouched"
    );
}

/// Several processes opening a database that does not exist yet race to create it and switch
/// it to WAL; SQLite answers the losers' journal-mode change with "busy" at once, which must be
/// waited out rather than reported.
#[test]
fn many_connections_creating_one_new_database_all_open_it() {
    let dir = tempfile::tempdir().expect("dir");
    for round in 0..10 {
        let path = dir.path().join(format!("new-{round}.db"));
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    barrier.wait();
                    runtime
                        .block_on(SqliteStore::open(&path))
                        .map(drop)
                        .map_err(|error| error.to_string())
                })
            })
            .collect();
        for opener in openers {
            let opened = opener.join().expect("no panic");
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
    }
}

/// The step-row decoder the fuzz target drives (`fuzz/fuzz_targets/step_row.rs`): a well-formed
/// row decodes; each kind of damage is a `Corrupt` error naming the column, never a panic.
#[test]
fn any_step_row_decodes_or_is_a_corrupt_error() {
    use smol_durable_sqlite::fuzzing::{decode_step, Column};
    let text = |value: &str| Column::Text(value.to_owned());
    let good = vec![
        text("step_1"),
        text("run_1"),
        text("run_1"),
        text("agent"),
        text("step:sig_x"),
        text("x"),
        text("{}"),
        text("completed"),
        text("{}"),
        text("{\"output\":1}"),
        Column::Null,
        text("owner_1"),
        Column::Integer(5),
        Column::Integer(1),
        Column::Integer(0),
        Column::Integer(0),
        Column::Integer(0),
    ];
    let row = decode_step(&good).expect("a well-formed row decodes");
    assert_eq!(
        (row.fence, row.result),
        (1, Some(serde_json::json!({"output": 1})))
    );
    let damage = [
        (8, text("{"), "input_json"),
        (13, Column::Integer(-1), "attempts"),
        (13, Column::Real(1.5), "attempts"),
        (0, Column::Blob(vec![0xff, 0xfe]), "step_id"),
        (7, Column::Integer(3), "state"),
        (12, text("soon"), "lease_expires_at"),
    ];
    for (index, value, column) in damage {
        let mut row = good.clone();
        row[index] = value;
        let error = decode_step(&row).expect_err("damaged");
        assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{error}");
        assert!(error.to_string().contains(column), "{error}");
    }
    assert!(
        decode_step(&good[..5]).is_err(),
        "missing columns read as NULL"
    );
}
