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
    /// A database other than the file in `dir` (a PostgreSQL URL).
    database: Option<String>,
}

impl Cli {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("dir"),
            database: None,
        }
    }

    /// Commands use `database` (a PostgreSQL URL) instead of the file.
    pub fn with_database(database: String) -> Self {
        Self {
            database: Some(database),
            ..Self::new()
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
            .env(
                "SMOL_DURABLE_DB",
                self.database
                    .clone()
                    .unwrap_or_else(|| self.db().display().to_string()),
            )
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

/// `smol-durable ui` started by a test, killed when dropped.
pub struct Inspector {
    child: Child,
    pub port: u16,
    /// `?token=…` when the URL it printed has one.
    pub query: String,
}

impl Inspector {
    pub fn start(cli: &Cli, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut all = vec!["ui"];
        all.extend(args);
        let mut child = cli.spawn(&all);
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the URL line");
        let url = line
            .trim()
            .strip_prefix("smol-durable ui: http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (host, rest) = url.split_once('/').expect("a path");
        let port = host.rsplit(':').next().unwrap().parse().expect("a port");
        Self {
            child,
            port,
            query: rest.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One request (`method path`, extra header lines, a body); the status code and the body.
    pub fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `GET path` with extra header lines.
    pub fn get(&self, path: &str, headers: &str) -> (u16, String) {
        self.request("GET", path, headers, "")
    }

    /// `GET path` as JSON, which must answer 200.
    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path, "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{path}: {error}: {body}"))
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
