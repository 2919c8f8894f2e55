//! The real `smol-durable` binary in a temporary directory, driven as a user would drive it:
//! shared by the CLI's test files (each uses part of it).

#![allow(dead_code)] // every test file is its own crate and uses a different part
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary directory holding the scripts, the database (`state/runs.db`, through
/// `SMOL_DURABLE_DB`) and `XDG_STATE_HOME`; commands run in it.
pub struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The database; its directory does not exist until a command creates it.
    pub fn db(&self) -> PathBuf {
        self.path("state/runs.db")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_smol-durable"));
        command
            .args(args)
            .env("SMOL_DURABLE_DB", self.db())
            .env("XDG_STATE_HOME", self.path("xdg"))
            .current_dir(self.dir.path());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts")
    }

    /// Writes a file into the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    /// stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// stderr of a command that must fail with exit code 1 and print nothing on stdout.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        String::from_utf8(output.stderr).expect("utf-8")
    }

    /// stdout of a command that must succeed, as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON on stdout")
    }

    /// The root runs' ids, newest first.
    pub fn run_ids(&self) -> Vec<String> {
        self.try_run_ids().expect("history reads the database")
    }

    /// The run ids, or `None` while `history` cannot read the database: read-only commands
    /// never create it, so they fail until a `run` has created and migrated it.
    pub fn try_run_ids(&self) -> Option<Vec<String>> {
        let output = self.run(&["history", "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        let list: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        Some(
            list.as_array()
                .expect("array")
                .iter()
                .map(|run| run["runID"].as_str().expect("runID").to_owned())
                .collect(),
        )
    }

    /// The first run's id, once the database exists and holds one.
    pub fn wait_for_run(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(run_id) = self.try_run_ids().into_iter().flatten().next() {
                return run_id;
            }
            assert!(Instant::now() < deadline, "no run appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the run has stored a step of `kind` in `state`.
    pub fn wait_for_step(&self, run_id: &str, kind: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.run(&["history", run_id, "-o", "json"]);
            if output.status.success() {
                let detail: Value = serde_json::from_slice(&output.stdout).expect("JSON");
                let found = detail["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|step| step["stepKind"] == kind && step["state"] == state);
                if found {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no {kind} step became {state}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The run's stored events.
    pub fn events(&self, run_id: &str) -> Vec<Value> {
        self.ok(&["events", run_id])
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
            .collect()
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
