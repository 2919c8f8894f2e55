//! Runs left behind by smol-wf 0.3.4 and by smol-durable 0.1.0 resume without paying again:
//! every completed step replays, only the calls that never completed run. The databases in
//! `tests/compat/dbs/` were written by those programs themselves (see its README); each test
//! works on a copy.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const DBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/dbs");

/// A copy of a checked-in database in a temporary directory.
struct Copy {
    dir: tempfile::TempDir,
    db: PathBuf,
}

fn copy(name: &str) -> Copy {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir
        .path()
        .join(Path::new(name).file_name().expect("a file name"));
    std::fs::copy(Path::new(DBS).join(name), &db).expect("copy");
    Copy { dir, db }
}

/// The binary with `args`, from the directory holding the scripts (`cwd`), with no default
/// database of its own.
fn smol_durable(cwd: &Path, db: &Path, args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("state");
    Command::new(env!("CARGO_BIN_EXE_smol-durable"))
        .arg("--db")
        .arg(db)
        .args(args)
        .current_dir(cwd)
        .env("XDG_STATE_HOME", state.path())
        .env_remove("SMOL_DURABLE_DB")
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON event"))
        .collect()
}

/// The prompts of the steps an event stream replayed and of the calls it made.
fn replayed_and_called(events: &[Value]) -> (Vec<String>, Vec<String>) {
    let prompts = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|event| event["type"] == kind && event["data"]["kind"] != "sleep")
            .filter(|event| event["data"]["kind"] != "workflow")
            .map(|event| {
                event["data"]["promptPreview"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    (
        prompts("workflow.step_replayed"),
        prompts("workflow.agent_started"),
    )
}

fn result(events: &[Value]) -> Value {
    events
        .iter()
        .rev()
        .find(|event| event["type"] == "workflow.result" && event["metadata"]["workflowDepth"] == 0)
        .map(|event| event["data"]["results"].clone())
        .unwrap_or(Value::Null)
}

fn ledger_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .expect("db")
        .query_row("SELECT COUNT(*) FROM sw_budget_ledger", [], |row| {
            row.get(0)
        })
        .expect("count")
}

fn newest_migration(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .expect("db")
        .query_row("SELECT MAX(id) FROM sw_migrations", [], |row| row.get(0))
        .expect("max")
}

#[test]
fn a_failed_smol_wf_run_with_phases_and_model_maps_replays_its_completed_calls() {
    let copy = copy("smolwf-0.3.4-a-budget-failed.db");
    assert_eq!(ledger_rows(&copy.db), 3);
    let output = smol_durable(
        Path::new(DBS),
        &copy.db,
        &[
            "run",
            "smolwf_a_budget.mjs",
            "--resume-run",
            "run_01m8xn7dxyc2c5n867wzqhew0p",
            "--budget-allowance",
            "1000",
            "--model-map",
            "smart:claude-x?thinking=low",
            "--model-map",
            "fast:openai/gpt-5",
            "--events",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let events = events(&output);
    let (replayed, called) = replayed_and_called(&events);
    assert_eq!(
        replayed,
        ["draft the plan", "review the plan", "write notes"],
        "every completed step replays"
    );
    assert_eq!(called, ["build it", "check it"], "only the new calls run");
    assert_eq!(
        result(&events),
        json!({
            "build": "echo: build it",
            "check": { "ok": true },
            "notes": "echo: write notes",
            "plan": "echo: draft the plan",
            "review": "echo: review the plan"
        })
    );
    assert_eq!(ledger_rows(&copy.db), 5, "no completed call billed again");
    // Stored wrapped, as smol-wf stores its runs' results, and read back unwrapped.
    let stored: String = rusqlite::Connection::open(&copy.db)
        .expect("db")
        .query_row(
            "SELECT completed_payload_json FROM sw_workflow_runs WHERE run_id = ?1",
            ["run_01m8xn7dxyc2c5n867wzqhew0p"],
            |row| row.get(0),
        )
        .expect("the stored result");
    let stored: Value = serde_json::from_str(&stored).expect("JSON");
    assert_eq!(stored, json!({ "result": result(&events) }));
    let status = smol_durable(
        Path::new(DBS),
        &copy.db,
        &["status", "run_01m8xn7dxyc2c5n867wzqhew0p"],
    );
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["results"], result(&events));
    // Upgraded once, after a copy smol-wf still opens was saved beside it.
    let backup = copy
        .dir
        .path()
        .join("smolwf-0.3.4-a-budget-failed.db.smol-wf-0.3.4.bak");
    assert!(stderr(&output).contains(&format!("the original was saved as {}", backup.display())));
    assert_eq!(newest_migration(&backup), 3, "the copy is smol-wf's schema");
    assert!(newest_migration(&copy.db) > 3);
    let again = smol_durable(Path::new(DBS), &copy.db, &["history"]);
    assert!(again.status.success());
    assert!(
        !stderr(&again).contains("smol-wf"),
        "said once: {}",
        stderr(&again)
    );
}

#[test]
fn smol_wf_runs_killed_or_cancelled_in_a_sleep_finish() {
    for (name, script, run_id, options, replayed, called, expected) in [
        (
            "smolwf-0.3.4-b-killed-in-sleep.db",
            "smolwf_b_killed.mjs",
            "run_01m8xn7hzb296mg9xky3avrgbm",
            vec![],
            vec!["first call", "second call"],
            vec!["after the sleep"],
            json!({ "first": "echo: first call", "second": "echo: second call", "third": "echo: after the sleep" }),
        ),
        (
            "smolwf-0.3.4-d-cancelled-in-sleep.db",
            "smolwf_d_cancelled.mjs",
            "run_01m8xn7kj3vj3nwzq9cffhx0m4",
            vec![],
            vec!["before the interrupt"],
            vec!["after the interrupt"],
            json!({ "first": "echo: before the interrupt", "second": "echo: after the interrupt" }),
        ),
        // smol-wf ran the child inline: its calls are steps of the root run, in its scope.
        (
            "smolwf-0.3.4-e-child-killed-in-sleep.db",
            "smolwf_e_parent.mjs",
            "run_01m8xvjpqjcsrxz5sh3jv9g0ym",
            vec!["--model-map", "smart:claude-x?thinking=low"],
            vec![
                "parent before",
                "kid starts beta",
                "kid finishes beta",
                "parent before",
            ],
            vec!["parent after"],
            json!({
                "before": "echo: parent before",
                "child": { "first": "echo: kid starts beta", "second": "echo: kid finishes beta" },
                "again": "echo: parent before",
                "after": "echo: parent after"
            }),
        ),
    ] {
        let copy = copy(name);
        let mut args = vec!["run", script, "--resume-run", run_id, "--events"];
        args.extend(options);
        let output = smol_durable(Path::new(DBS), &copy.db, &args);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let events = events(&output);
        assert_eq!(
            replayed_and_called(&events),
            (
                replayed.iter().map(|s| (*s).to_owned()).collect(),
                called.iter().map(|s| (*s).to_owned()).collect(),
            ),
            "{name}"
        );
        assert_eq!(result(&events), expected, "{name}");
    }
}

#[test]
fn a_completed_smol_wf_run_returns_its_stored_result() {
    let copy = copy("smolwf-0.3.4-c-child-sleep-completed.db");
    let output = smol_durable(
        Path::new(DBS),
        &copy.db,
        &[
            "run",
            "smolwf_c_parent.mjs",
            "--resume-run",
            "run_01m8xn7ke79fyd723cwqnm87n6",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        printed["results"],
        json!({
            "after": "echo: parent after",
            "before": "echo: parent before",
            "child": { "c": "echo: child handles alpha", "item": "alpha" }
        }),
        "smol-wf's stored {{\"result\": …}} reads as the result"
    );
    assert_eq!(
        printed["tokenUsage"],
        json!({ "inputTokens": 12, "outputTokens": 18, "totalTokens": 30 })
    );
    let history = smol_durable(
        Path::new(DBS),
        &copy.db,
        &["history", "run_01m8xn7ke79fyd723cwqnm87n6", "-o", "json"],
    );
    let detail: Value = serde_json::from_slice(&history.stdout).expect("JSON");
    assert_eq!(
        detail["attempts"].as_array().map(Vec::len),
        Some(1),
        "nothing ran again"
    );
}

#[test]
fn reading_a_smol_wf_database_changes_nothing_in_it() {
    let copy = copy("smolwf-0.3.4-c-child-sleep-completed.db");
    let before = std::fs::read(&copy.db).expect("read");
    for args in [
        vec!["history"],
        vec!["history", "-o", "json"],
        vec!["history", "run_01m8xn7ke79fyd723cwqnm87n6"],
        vec!["status", "run_01m8xn7ke79fyd723cwqnm87n6"],
        vec!["events", "run_01m8xn7ke79fyd723cwqnm87n6"],
    ] {
        let output = smol_durable(copy.dir.path(), &copy.db, &args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    assert_eq!(
        std::fs::read(&copy.db).expect("read"),
        before,
        "byte for byte"
    );
    assert_eq!(newest_migration(&copy.db), 3);
    let files: Vec<_> = std::fs::read_dir(copy.dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(files.len(), 1, "no backup, no journal left: {files:?}");
}

#[test]
fn read_only_commands_never_create_a_database() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("typo.db");
    for (args, says) in [
        (vec!["history"], "history database"),
        (vec!["status", "run_x"], "status database"),
        (vec!["events", "run_x"], "events database"),
    ] {
        let output = smol_durable(dir.path(), &missing, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output).trim_end(),
            format!(
                "error: {says} {} was not found; pass --db or run a workflow first",
                missing.display()
            )
        );
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn without_a_database_of_its_own_it_says_where_smol_wf_s_is() {
    let state = tempfile::tempdir().expect("state");
    let theirs = state.path().join("smol-workflows/workflows.db");
    std::fs::create_dir_all(theirs.parent().expect("parent")).expect("dir");
    std::fs::copy(
        Path::new(DBS).join("smolwf-0.3.4-c-child-sleep-completed.db"),
        &theirs,
    )
    .expect("copy");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smol-durable"))
            .args(args)
            .current_dir(DBS)
            .env("XDG_STATE_HOME", state.path())
            .env_remove("SMOL_DURABLE_DB")
            .output()
            .expect("runs")
    };
    let history = run(&["history"]);
    assert_eq!(history.status.code(), Some(1));
    let ours = state.path().join("smol-durable/smol-durable.db");
    assert_eq!(
        stderr(&history).trim_end(),
        format!(
            "error: history database {} was not found; smol-wf's database is at {}: pass --db {}",
            ours.display(),
            theirs.display(),
            theirs.display()
        )
    );
    let first = run(&["run", "smolwf_c_child.mjs", "--args-item", "x"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains(&format!("runs of smol-wf are in {}", theirs.display())),
        "{}",
        stderr(&first)
    );
    let second = run(&["run", "smolwf_c_child.mjs", "--args-item", "y"]);
    assert!(
        !stderr(&second).contains("smol-wf"),
        "only while ours is new"
    );
}

#[test]
fn a_run_of_smol_durable_0_1_replays_its_completed_steps() {
    let copy = copy("smol-durable-0.1/legacy.db");
    let run_id: String = rusqlite::Connection::open(&copy.db)
        .expect("db")
        .query_row(
            "SELECT run_id FROM sw_workflow_runs WHERE parent_run_id IS NULL",
            [],
            |row| row.get(0),
        )
        .expect("run");
    let output = smol_durable(
        &Path::new(DBS).join("smol-durable-0.1"),
        &copy.db,
        &[
            "run",
            "legacy.mjs",
            "--resume-run",
            &run_id,
            "--budget-allowance",
            "1000",
            "--events",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let events = events(&output);
    let kinds: Vec<&str> = events
        .iter()
        .filter(|event| event["type"] == "workflow.step_replayed")
        .filter_map(|event| event["data"]["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["agent", "agent", "agent", "agent", "sleep", "workflow", "agent"],
        "phase-inherited, aliased, keyed and parallel calls, the sleep and the child all replay"
    );
    let (_, called) = replayed_and_called(&events);
    assert_eq!(
        called,
        ["final true"],
        "only the call the budget stopped runs"
    );
    assert_eq!(result(&events)["final"], "echo: final true");
}
