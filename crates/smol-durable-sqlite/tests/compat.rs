//! A database left by smol-wf 0.3.4 opens, migrates forward in place, lists its runs and
//! resumes: the completed agent step replays without calling the provider.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;

use rusqlite::{params, Connection};
use serde_json::{json, Value};
use smol_durable_core::store::{RunFilter, State};
use smol_durable_core::{canonical_json, Engine, ResumeOptions, StepSignature, StoreAdmin};
use smol_durable_sqlite::{SqliteStore, SCHEMA_VERSION};
use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};

const T0: i64 = 1_767_000_000_000;

/// smol-wf 0.3.4's schema: its three migrations, recorded as it recorded them.
fn smol_wf_schema(db: &Connection) {
    for (id, version, sql) in [
        (1, "0.1.0", include_str!("../migrations/1.sql")),
        (2, "0.1.0", include_str!("../migrations/2.sql")),
        (3, "0.3.4", include_str!("../migrations/3.sql")),
    ] {
        db.execute_batch(sql).expect("smol-wf migration");
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS sw_migrations (id INTEGER PRIMARY KEY, introduced_version TEXT NOT NULL, applied_time INTEGER NOT NULL)",
        )
        .expect("migrations table");
        db.execute(
            "INSERT INTO sw_migrations (id, introduced_version, applied_time) VALUES (?1, ?2, ?3)",
            params![id, version, T0 - 10_000],
        )
        .expect("record migration");
    }
}

fn insert_run(
    db: &Connection,
    task_id: &str,
    run_id: &str,
    state: &str,
    script: &str,
    payload: Option<Value>,
    failure: Option<Value>,
) {
    let params_json = json!({ "mode": "local", "scriptPath": script, "args": { "topic": "tea" } });
    let workflow = json!({ "mode": "local", "scriptPath": script, "metadata": { "name": "legacy-flow", "description": "written by smol-wf ✓" } });
    db.execute(
        "INSERT INTO sw_workflow_tasks (task_id, task_name, state, params_json, submitted_by_owner_id, claim_scope, created_at, updated_at, completed_payload_json, failure_reason_json, max_attempts)
         VALUES (?1, 'workflow.run', ?2, ?3, 'owner_01legacy', 'local', ?4, ?4, ?5, ?6, 1)",
        params![task_id, state, params_json.to_string(), T0, payload.as_ref().map(Value::to_string), failure.as_ref().map(Value::to_string)],
    )
    .expect("task");
    db.execute(
        "INSERT INTO sw_workflow_runs (run_id, task_id, root_run_id, state, workflow_run_json, args_json, budget_total, budget_spent, created_at, updated_at, completed_payload_json, failure_reason_json)
         VALUES (?1, ?2, ?1, ?3, ?4, ?5, NULL, 0, ?6, ?6, ?7, ?8)",
        params![run_id, task_id, state, workflow.to_string(), json!({ "topic": "tea" }).to_string(), T0, payload.as_ref().map(Value::to_string), failure.as_ref().map(Value::to_string)],
    )
    .expect("run");
    db.execute(
        "INSERT INTO sw_workflow_attempts (attempt_id, run_id, task_id, attempt, worker_id, state, lease_expires_at, started_at, completed_at, failure_reason_json)
         VALUES (?1, ?2, ?3, 1, 'owner_01legacy', ?4, ?5, ?5, ?5, ?6)",
        params![format!("attempt_{run_id}"), run_id, task_id, state, T0 + 60_000, failure.as_ref().map(Value::to_string)],
    )
    .expect("attempt");
}

fn insert_step(
    db: &Connection,
    run_id: &str,
    step_id: &str,
    kind: &str,
    signature: &Value,
    input: &Value,
    result: &Value,
) -> String {
    let canonical = canonical_json(signature);
    let sig = StepSignature::from_document(signature);
    db.execute(
        "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, input_signature_hash, input_signature_json, state, input_json, result_json, worker_id, lease_expires_at, attempts, last_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, 'completed', ?7, ?8, 'owner_01legacy', NULL, 1, ?9, ?9, ?9)",
        params![step_id, run_id, kind, sig.base_checkpoint(), sig.hash, canonical, input.to_string(), result.to_string(), T0 + 100],
    )
    .expect("step");
    sig.base_checkpoint()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smol_wf_database_migrates_lists_and_resumes() {
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("legacy.workflow.mjs");
    std::fs::write(&script, "// the script file smol-wf ran").expect("script");
    let script_path = script.display().to_string();
    let db_path = dir.path().join("smol-wf.db");
    {
        let db = Connection::open(&db_path).expect("create");
        db.pragma_update(None, "journal_mode", "WAL").expect("wal");
        db.pragma_update(None, "foreign_keys", "ON").expect("fk");
        smol_wf_schema(&db);
        insert_run(
            &db,
            "task_01done",
            "run_01done",
            "completed",
            &script_path,
            Some(json!({ "result": { "done": true } })),
            None,
        );
        insert_run(
            &db,
            "task_01failed",
            "run_01failed",
            "failed",
            &script_path,
            None,
            Some(json!({ "message": "boom" })),
        );
        // smol-wf put the invocation directory in every agent signature.
        let agent_signature = json!({
            "signatureVersion": 2, "kind": "agent", "workflowScope": "root", "provider": "debug",
            "prompt": "research tea", "options": null, "context": { "phase": null, "cwd": "/home/legacy/project" }
        });
        insert_step(
            &db,
            "run_01failed",
            "step_01agent",
            "agent",
            &agent_signature,
            &json!({ "prompt": "research tea" }),
            &json!({ "output": "tea is a drink", "sessionId": null, "model": "legacy-model", "usage": { "outputTokens": 5 } }),
        );
        db.execute(
            "INSERT INTO sw_budget_ledger (budget_entry_id, run_id, root_run_id, step_id, source_type, source_id, output_tokens, usage_json, created_at)
             VALUES ('budget_01a', 'run_01failed', 'run_01failed', 'step_01agent', 'agent_step', 'step_01agent', 5, '{\"outputTokens\":5}', ?1)",
            params![T0 + 100],
        )
        .expect("ledger");
        let sleep_signature = json!({ "signatureVersion": 1, "kind": "sleep", "workflowScope": "root", "durationMs": 5 });
        insert_step(
            &db,
            "run_01failed",
            "step_01sleep",
            "sleep",
            &sleep_signature,
            &json!({ "durationMs": 5, "wakeAt": T0 + 105 }),
            &json!({ "ok": true, "durationMs": 5, "wakeAt": T0 + 105, "completedAt": T0 + 106 }),
        );
    }

    let store = Arc::new(SqliteStore::open(&db_path).await.expect("open and migrate"));
    {
        let db = Connection::open(&db_path).expect("inspect");
        let migrations: Vec<(i64, String, i64)> = db
            .prepare("SELECT id, introduced_version, applied_time FROM sw_migrations ORDER BY id")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(migrations.len() as i64, SCHEMA_VERSION);
        assert_eq!(
            migrations[0],
            (1, "0.1.0".to_owned(), T0 - 10_000),
            "smol-wf's records are kept"
        );
        assert_eq!(migrations[2], (3, "0.3.4".to_owned(), T0 - 10_000));
        assert!(migrations[3].1.starts_with("smol-durable"));
    }

    let runs = store.list_runs(&RunFilter::roots()).await.expect("list");
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(
            run.workflow.script_path.as_deref(),
            Some(script_path.as_str())
        );
        assert_eq!(
            run.workflow
                .metadata
                .as_ref()
                .map(|m| m["description"].clone()),
            Some(json!("written by smol-wf ✓"))
        );
    }
    let failed = runs
        .iter()
        .find(|r| r.run_id == "run_01failed")
        .expect("failed run");
    assert_eq!(failed.state, State::Failed);

    let scripts = ScriptedEngine::new().workflow(script.clone(), |ctx| async move {
        let notes = ctx.agent("research tea", Value::Null).await?;
        ctx.sleep(5).await?;
        let summary = ctx.agent("summarise tea", Value::Null).await?;
        Ok(json!({ "notes": notes, "summary": summary }))
    });
    let provider = Arc::new(ScriptedProvider::new("debug"));
    let engine = Engine::builder()
        .store(store.clone())
        .script_engine(Arc::new(scripts))
        .provider(provider.clone())
        .build()
        .expect("engine");
    let resumed = engine
        .resume("run_01failed", ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed run");
    assert_eq!(
        resumed.result,
        json!({ "notes": "tea is a drink", "summary": "echo: summarise tea" })
    );
    assert_eq!(resumed.attempt, 2);
    assert_eq!(
        provider.calls_for("research tea"),
        0,
        "the completed agent step is replayed"
    );
    assert_eq!(provider.call_count(), 1);
    assert_eq!(
        resumed.token_usage.output_tokens, 6,
        "the old ledger row counts"
    );

    let done = engine
        .resume("run_01done", ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("done");
    assert_eq!(
        done.result,
        json!({ "done": true }),
        "smol-wf's `{{\"result\": value}}` wrapper is unwrapped"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    let db_path = dir.path().join("future.db");
    {
        let db = Connection::open(&db_path).expect("create");
        smol_wf_schema(&db);
        db.execute("INSERT INTO sw_migrations (id, introduced_version, applied_time) VALUES (99, 'smol-durable 9.0.0', 1)", [])
            .expect("future migration");
    }
    let before = std::fs::read(&db_path).expect("bytes");
    let error = SqliteStore::open(&db_path).await.expect_err("refused");
    assert_eq!(error.kind(), smol_durable_core::StoreErrorKind::Unsupported);
    assert!(
        error
            .to_string()
            .contains("newer than this smol-durable knows"),
        "{error}"
    );
    let db = Connection::open(&db_path).expect("inspect");
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM sw_migrations ORDER BY id")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(ids, vec![1, 2, 3, 99], "nothing was migrated");
    let has_scripts: bool = db
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sw_workflow_scripts')",
            [],
            |row| row.get(0),
        )
        .expect("query");
    assert!(!has_scripts);
    drop(db);
    assert_eq!(std::fs::read(&db_path).expect("bytes").len(), before.len());
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().expect("dir");
    let db_path = dir.path().join("twice.db");
    drop(SqliteStore::open(&db_path).await.expect("first open"));
    drop(SqliteStore::open(&db_path).await.expect("second open"));
    let db = Connection::open(&db_path).expect("inspect");
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM sw_migrations", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, SCHEMA_VERSION);
}
