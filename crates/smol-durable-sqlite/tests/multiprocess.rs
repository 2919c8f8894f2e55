//! Two OS processes share one database file and race to claim the same step, 50 times.
//! Exactly one wins each race, the other waits and then sees the winner's result, and every
//! completion is recorded once.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use smol_durable_core::steps::{acquire_step, complete_fenced, Acquired, KnownRow, StepClaim};
use smol_durable_core::store::{ClaimScope, LedgerEntry, NewRun, State, StepKind, WorkflowInfo};
use smol_durable_core::{DurableStore, StepSignature, Usage};
use smol_durable_sqlite::SqliteStore;

const RACES: usize = 50;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn two_processes_race_for_the_same_steps() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("shared.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let run_id = runtime.block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let created = store
            .create_run(NewRun::new(
                ClaimScope::Local,
                "owner_parent",
                WorkflowInfo::new(),
                json!({}),
                now_ms(),
            ))
            .await
            .expect("create");
        created.run.run_id
    });
    // Both children start each race at the same wall-clock moment.
    let start = now_ms() + 1_500;
    let spawned: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "race_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("SMOL_RACE_DB", &path)
                .env("SMOL_RACE_RUN", &run_id)
                .env("SMOL_RACE_NAME", name)
                .env("SMOL_RACE_START", start.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let children: Vec<_> = spawned
        .into_iter()
        .map(|child| child.wait_with_output().expect("child output"))
        .collect();
    let mut claims = vec![Vec::new(); RACES];
    let mut seen = vec![Vec::new(); RACES];
    for output in &children {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The harness prints "test race_child ... " without a newline before our first line.
        for line in stdout
            .lines()
            .filter_map(|line| line.find("RACE ").map(|at| &line[at + 5..]))
        {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            let race: usize = parts[0].parse().expect("race number");
            let name = parts[1].to_owned();
            match parts[2] {
                "claimed" => claims[race].push(name),
                "waited" => {}
                other => panic!("unexpected outcome {other}"),
            }
            seen[race].push(parts[3].to_owned());
        }
    }
    for race in 0..RACES {
        assert_eq!(
            claims[race].len(),
            1,
            "race {race}: exactly one process wins, got {:?}",
            claims[race]
        );
        assert_eq!(
            seen[race].len(),
            2,
            "race {race}: both processes report a result"
        );
        assert_eq!(
            seen[race][0], seen[race][1],
            "race {race}: both see the winner's result"
        );
    }
    let a_wins = claims
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some("a"))
        .count();
    eprintln!(
        "process a won {a_wins} of {RACES} races, process b {}",
        RACES - a_wins
    );
    runtime.block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let steps = store.load_steps(&run_id).await.expect("steps");
        assert_eq!(steps.len(), RACES);
        assert!(steps
            .iter()
            .all(|step| step.state == State::Completed && step.fence == 1));
        let ledger = store.ledger_entries(&run_id).await.expect("ledger");
        assert_eq!(ledger.len(), RACES, "every completion is billed once");
        assert_eq!(
            store.budget_spent(&run_id).await.expect("spent"),
            RACES as u64 * 3
        );
    });
}

/// The child side; does nothing unless started by the test above.
#[test]
#[ignore = "run as a child process by two_processes_race_for_the_same_steps"]
fn race_child() {
    let (Ok(path), Ok(run_id), Ok(name), Ok(start)) = (
        std::env::var("SMOL_RACE_DB"),
        std::env::var("SMOL_RACE_RUN"),
        std::env::var("SMOL_RACE_NAME"),
        std::env::var("SMOL_RACE_START"),
    ) else {
        return;
    };
    let start: i64 = start.parse().expect("start time");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = SqliteStore::open(&path).await.expect("child open");
        let owner = format!("owner_{name}");
        for race in 0..RACES {
            let at = start + race as i64 * 40;
            let wait = at - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let checkpoint = format!("step:race{race}");
            let signature = StepSignature::agent(
                "root",
                "race",
                &format!("race {race}"),
                &Value::Null,
                None,
                None,
            );
            let claim = StepClaim {
                run_id: &run_id,
                root_run_id: &run_id,
                kind: StepKind::Agent,
                checkpoint_name: &checkpoint,
                signature: &signature,
                input: json!({ "race": race }),
                worker_id: &owner,
                lease_expires_at: now_ms() + 60_000,
            };
            let (outcome, value) = match acquire_step(&store, &claim, KnownRow::Absent, now_ms())
                .await
                .expect("acquire")
            {
                Acquired::Claimed(row) => {
                    let usage = Usage::tokens(1, 3);
                    let ledger = LedgerEntry::new(
                        &run_id,
                        &run_id,
                        &row.step_id,
                        smol_durable_core::store::LedgerSource::AgentStep,
                        row.step_id.clone(),
                        Some(&usage),
                        now_ms(),
                    );
                    let done = complete_fenced(
                        &store,
                        &row.step_id,
                        row.fence,
                        json!({ "output": format!("{name} won {race}") }),
                        vec![ledger],
                        now_ms(),
                    )
                    .await
                    .expect("complete");
                    ("claimed", done.value)
                }
                Acquired::Wait(_) | Acquired::Replay { .. } => {
                    // Wait for the winner's result, as the engine would.
                    let mut value = None;
                    for _ in 0..500 {
                        match acquire_step(&store, &claim, KnownRow::Unknown, now_ms())
                            .await
                            .expect("acquire")
                        {
                            Acquired::Replay { result, .. } => {
                                value = Some(result);
                                break;
                            }
                            Acquired::Wait(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                            Acquired::Claimed(_) => panic!("a live lease was claimed over"),
                        }
                    }
                    ("waited", value.expect("the winner completed"))
                }
            };
            println!("RACE {race} {name} {outcome} {value}");
        }
    });
}
