//! What the CLI tells a person whose run failed or started oddly: the command that continues a
//! run works when pasted into a shell, a budget failure says how to raise the allowance, a
//! resume with another script says so, a submit without a real provider warns, and a runaway
//! script fails with one clear message and no Rust panic dump.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const META: &str = "export const meta = { name: \"hints\", description: \"hints\" };\n";

/// A directory with a `smol-durable` on its `PATH` (a hint names the program that way), a
/// database with a space in its path, and scripts in a directory with one too.
struct Shell {
    dir: tempfile::TempDir,
}

impl Shell {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
        std::fs::create_dir_all(dir.path().join("my flows")).expect("flows");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_smol-durable"),
            dir.path().join("bin/smol-durable"),
        )
        .expect("link");
        Self { dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state dir/runs.db")
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join("my flows").join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    fn path(&self) -> String {
        let inherited = std::env::var("PATH").unwrap_or_default();
        format!("{}:{inherited}", self.dir.path().join("bin").display())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_smol-durable"))
            .arg("--db")
            .arg(self.db())
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", self.path())
            .env("XDG_STATE_HOME", self.dir.path())
            .env_remove("SMOL_DURABLE_DB")
            .output()
            .expect("runs")
    }

    /// Runs a line as a person pasting it into a POSIX shell would.
    fn paste(&self, line: &str) -> Output {
        Command::new("/bin/sh")
            .args(["-c", line])
            .current_dir(self.dir.path())
            .env("PATH", self.path())
            .env("XDG_STATE_HOME", self.dir.path())
            .env_remove("SMOL_DURABLE_DB")
            .output()
            .expect("sh runs")
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command of the `hint:` line.
fn hinted_command(output: &Output) -> String {
    let text = stderr(output);
    let hint = text
        .lines()
        .find_map(|line| line.strip_prefix("hint: "))
        .unwrap_or_else(|| panic!("no hint: {text}"));
    let start = hint
        .find("smol-durable ")
        .unwrap_or_else(|| panic!("no command in the hint: {hint}"));
    hint[start..].to_owned()
}

#[test]
fn the_resume_command_of_a_failed_run_works_when_pasted() {
    let shell = Shell::new();
    let script = shell.write(
        "flaky one.mjs",
        &format!("{META}const a = await agent('one', {{ model: 'smart' }});\nif (!args.fixed) throw new Error('not yet');\nexport default a;\n"),
    );
    let failed = shell.run(&[
        "--script-engine",
        "in-process",
        "--script-cpu-seconds",
        "90",
        "run",
        &script,
        "--model-map",
        "smart:claude-x?thinking=low&provider=p",
        "--agent-provider",
        "debug",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let command = hinted_command(&failed);
    for needed in [
        "--db ",
        "--script-engine in-process",
        "--script-cpu-seconds 90",
        "--agent-provider debug",
        "--model-map 'smart:claude-x?thinking=low&provider=p'",
        "--resume-run run_",
    ] {
        assert!(command.contains(needed), "{needed} missing from {command}");
    }
    // The cause fixed, the pasted command continues the run and replays the first call.
    std::fs::write(
        &script,
        std::fs::read_to_string(&script)
            .unwrap()
            .replace("!args.fixed", "false"),
    )
    .expect("fix");
    let resumed = shell.paste(&format!("{command} --events"));
    assert!(resumed.status.success(), "{command}: {}", stderr(&resumed));
    let events: Vec<Value> = String::from_utf8_lossy(&resumed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert!(events.iter().any(|e| e["type"] == "workflow.step_replayed"));
    assert!(!events.iter().any(|e| e["type"] == "workflow.agent_started"));
    let result = events.last().expect("a result");
    assert_eq!(result["data"]["results"], "echo: one");
}

#[test]
fn a_budget_failure_says_how_to_raise_the_allowance() {
    let shell = Shell::new();
    let script = shell.write(
        "spend.mjs",
        &format!("{META}const out = [];\nfor (let i = 0; i < 4; i++) out.push(await agent('call number ' + i));\nexport default out;\n"),
    );
    let failed = shell.run(&["run", &script, "--budget-allowance", "12"]);
    assert_eq!(failed.status.code(), Some(1));
    let text = stderr(&failed);
    assert!(
        text.contains("error: budget exhausted: spent 12 of 12 output tokens"),
        "{text}"
    );
    assert!(
        text.contains("hint: the run spent 12 of its 12 output tokens; continue it with a larger allowance: smol-durable "),
        "{text}"
    );
    let command = hinted_command(&failed);
    assert!(command.ends_with("--budget-allowance 1012"), "{command}");
    let resumed = shell.paste(&command);
    assert!(resumed.status.success(), "{command}: {}", stderr(&resumed));
    let printed: Value = serde_json::from_slice(&resumed.stdout).expect("JSON");
    assert_eq!(printed["results"].as_array().map(Vec::len), Some(4));
}

#[test]
fn a_resume_with_another_script_says_so() {
    let shell = Shell::new();
    let first = shell.write(
        "first.mjs",
        &format!("{META}await agent('x');\nthrow new Error('stop');\nexport default 1;\n"),
    );
    let other = shell.write(
        "other.mjs",
        &format!("{META}export default await agent('x');\n"),
    );
    let failed = shell.run(&["run", &first]);
    let command = hinted_command(&failed);
    let run_id = command.rsplit(' ').next().expect("a run id").to_owned();
    let resumed = shell.run(&["run", &other, "--resume-run", &run_id]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!(
            "note: run {run_id} was started with {first}; it continues with {other}"
        )),
        "{}",
        stderr(&resumed)
    );
    let same = shell.run(&["run", &first, "--resume-run", &run_id]);
    assert!(!stderr(&same).contains("note:"), "{}", stderr(&same));
}

#[test]
fn a_submit_says_which_provider_its_agents_get() {
    let shell = Shell::new();
    let script = shell.write(
        "queued.mjs",
        &format!("{META}export default await agent('x');\n"),
    );
    let offline = shell.run(&["submit", &script]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    let printed: Value = serde_json::from_slice(&offline.stdout).expect("JSON");
    assert!(printed["runID"]
        .as_str()
        .is_some_and(|id| id.starts_with("run_")));
    assert!(printed["taskId"]
        .as_str()
        .is_some_and(|id| id.starts_with("task_")));
    assert_eq!(printed["state"], "pending");
    assert!(
        stderr(&offline).contains("the run's agents use the offline debug provider"),
        "{}",
        stderr(&offline)
    );
    // A submitter names the provider; what runs it is the worker's business.
    let command = shell.run(&["submit", &script, "--agent-provider", "command"]);
    assert!(command.status.success(), "{}", stderr(&command));
    assert!(!stderr(&command).contains("debug provider"));
    let unknown = shell.run(&["submit", &script, "--agent-provider", "nope"]);
    assert_eq!(
        stderr(&unknown).trim_end(),
        "error: Unknown agent provider: nope"
    );
}

#[test]
fn a_runaway_script_fails_with_one_message_and_no_panic_dump() {
    let shell = Shell::new();
    let script = shell.write(
        "deep.mjs",
        &format!("{META}function f(n) {{ return f(n + 1) + 1; }}\nexport default f(0);\n"),
    );
    for engine in ["in-process", "isolated"] {
        let output = shell.run(&["--script-engine", engine, "run", &script]);
        assert_eq!(output.status.code(), Some(1), "{engine}");
        let text = stderr(&output);
        assert!(
            text.starts_with(
                "error: the workflow exceeded the JavaScript recursion limit (runaway recursion?)"
            ),
            "{engine}: {text}"
        );
        assert!(
            !text.contains("panicked") && !text.contains("backtrace"),
            "{engine}: {text}"
        );
    }
}

#[test]
fn a_worker_says_which_provider_each_claimed_run_uses() {
    let shell = Shell::new();
    let script = shell.write(
        "queued.mjs",
        &format!("{META}export default await agent('x');\n"),
    );
    let submitted = shell.run(&["submit", &script]);
    let run: Value = serde_json::from_slice(&submitted.stdout).expect("JSON");
    let run_id = run["runID"].as_str().expect("runID").to_owned();
    let worker = Command::new(env!("CARGO_BIN_EXE_smol-durable"))
        .arg("--db")
        .arg(shell.db())
        .args(["worker", "--concurrency", "1"])
        .current_dir(shell.dir.path())
        .env_remove("SMOL_DURABLE_DB")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("worker starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = shell.run(&["status", &run_id]);
        let status: Value = serde_json::from_slice(&status.stdout).expect("JSON");
        if status["state"] == "completed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not run: {status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = worker.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let output = worker.wait_with_output().expect("worker exits");
    let text = stderr(&output);
    assert!(
        text.contains("claimed a run whose agents use the offline debug provider")
            && text.contains(&run_id),
        "{text}"
    );
}
