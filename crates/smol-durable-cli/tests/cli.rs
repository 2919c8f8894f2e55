//! The real `smol-durable` binary, driven as a user would drive it.
//! (Long, but one list of cases.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{stderr, Cli};

fn hello() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/hello.mjs")
        .display()
        .to_string()
}

const META: &str = "export const meta = { name: \"cli-test\", description: \"test\" };\n";

#[test]
fn run_prints_smol_wf_json_in_its_key_order() {
    let cli = Cli::new();
    let output = cli.run(&["run", &hello(), "--args-name", "Ada"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let usage = text.find("\"tokenUsage\"").expect("tokenUsage");
    let run_id = text.find("\"runID\"").expect("runID");
    let results = text.find("\"results\"").expect("results");
    assert!(usage < run_id && run_id < results, "{text}");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        value["results"]["greeting"],
        json!("echo: Say hello to Ada")
    );
    assert_eq!(value["tokenUsage"]["outputTokens"], json!(18));
    assert!(value["runID"].as_str().unwrap().starts_with("run_"));
    assert!(
        cli.db().exists(),
        "the database is created with its directory"
    );
}

#[test]
fn history_status_and_events_show_a_finished_run() {
    let cli = Cli::new();
    let output = cli.run(&["run", &hello()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let spent = printed["tokenUsage"]["outputTokens"].clone();
    assert!(spent.as_u64() > Some(0), "{printed}");
    let run_id = cli.run_ids().remove(0);

    let table = cli.run(&["history"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("RUN"), "{table}");
    assert!(table.contains(&run_id) && table.contains("completed") && table.contains("hello"));

    let detail = cli.json(&["history", &run_id, "-o", "json"]);
    assert_eq!(detail["workflowRun"]["runID"], json!(run_id));
    assert_eq!(detail["workflowRun"]["state"], json!("completed"));
    assert_eq!(detail["workflowRun"]["args"], json!({}));
    assert_eq!(
        detail["results"]["greeting"],
        json!("echo: Say hello to the world")
    );
    assert_eq!(detail["tokenUsage"]["outputTokens"], spent);
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(1));
    let kinds: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stepKind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["agent", "sleep", "agent", "agent"],
        "three agents and a sleep"
    );

    let status = cli.json(&["status", &run_id]);
    assert_eq!(status["runID"], json!(run_id));
    assert_eq!(status["rootRunId"], json!(run_id));
    assert_eq!(status["parentRunId"], Value::Null);
    assert!(status["taskId"].as_str().unwrap().starts_with("task_"));
    assert_eq!(status["state"], json!("completed"));
    assert_eq!(status["attempts"], json!(1));
    assert_eq!(status["results"], detail["results"]);
    assert_eq!(status["tokenUsage"]["outputTokens"], spent);
    assert!(
        status.get("ownerGone").is_none(),
        "only a run whose owner is gone says so"
    );

    let events = cli.events(&run_id);
    let first = events.first().unwrap();
    assert_eq!(first["type"], json!("workflow.started"));
    assert!(
        first["data"]["startTime"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
        "{first}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], json!("workflow.result"));
    assert_eq!(last["data"]["results"], detail["results"]);
    assert_eq!(last["data"]["tokenUsage"]["outputTokens"], spent);
    for event in &events {
        assert_eq!(event["metadata"]["runId"], json!(run_id), "{event}");
        assert_eq!(event["metadata"]["workflowDepth"], json!(0), "{event}");
    }

    let filtered = cli.json(&["history", "-o", "json", "--state", "failed"]);
    assert_eq!(filtered, json!([]));
    let named = cli.json(&["history", "-o", "json", "--name", "hel", "--limit", "1"]);
    assert_eq!(named.as_array().map(Vec::len), Some(1));
}

#[test]
fn events_flag_prints_json_lines() {
    let cli = Cli::new();
    let output = cli.run(&["run", &hello(), "--events"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let types: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("JSON line");
            event["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("workflow.started"));
    assert!(types.iter().any(|t| t == "workflow.agent_completed"));
    assert_eq!(types.last().map(String::as_str), Some("workflow.result"));
}

#[test]
fn workflow_arguments_from_flags_and_a_file() {
    let cli = Cli::new();
    let script = cli.write("echo_args.mjs", &format!("{META}export default args;\n"));
    let file = cli.write("args.json", r#"{ "topic": "tea", "n": 3 }"#);
    let value = cli.json(&[
        "run",
        &script,
        "--args-from-file",
        &file,
        "--args-topic",
        "coffee",
        "--args-tag=a",
        "--args-tag",
        "b",
        "--args-verbose",
    ]);
    // Every source merges in command-line order: a name seen again collects an array, so a
    // later `--args-topic` extends the file's `topic` instead of replacing it.
    assert_eq!(
        value["results"],
        json!({ "topic": ["tea", "coffee"], "n": 3, "tag": ["a", "b"], "verbose": true })
    );
    // `--args-from-file` is repeatable; any extension but .yaml/.yml is read as JSON.
    let text = cli.write("more.txt", r#"{ "topic": "milk", "tag": ["c"] }"#);
    let value = cli.json(&[
        "run",
        &script,
        "--args-topic",
        "water",
        "--args-from-file",
        &file,
        "--args-from-file",
        &text,
    ]);
    assert_eq!(
        value["results"],
        json!({ "topic": ["water", "tea", "milk"], "n": 3, "tag": ["c"] })
    );
    let yaml = cli.write(
        "args.yaml",
        "topic: tea\nnested:\n  list: [1, two]\n  \"ünïcode\": é\n",
    );
    let value = cli.json(&["run", &script, "--args-from-file", &yaml]);
    assert_eq!(
        value["results"],
        json!({ "topic": "tea", "nested": { "list": [1, "two"], "ünïcode": "é" } })
    );
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let cli = Cli::new();
    // Read-only commands never create a database; before any run there is none to read.
    for command in ["history", "status", "events"] {
        let mut args = vec![command];
        if command != "history" {
            args.push("run_nope");
        }
        let output = cli.run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            format!(
                "error: {command} database {} was not found; pass --db or run a workflow first\n",
                cli.db().display()
            ),
            "{args:?}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    assert!(
        !cli.db().exists() && !cli.db().parent().unwrap().exists(),
        "read-only commands created nothing"
    );
    let bad_json = cli.write("bad.json", "{ not json");
    let array_json = cli.write("array.json", "[1, 2]");
    let bad_yaml = cli.write("bad.yaml", "topic: [unclosed");
    let toml = cli.write("args.toml", "topic = \"tea\"\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "missing.mjs".into()],
            "cannot read workflow missing.mjs",
        ),
        (
            vec!["run".into(), hello(), "--bogus".into()],
            "Unknown option: --bogus. Run arguments must use --args-<name> or --args-from-file.",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--budget-allowance".into(),
                "-1".into(),
            ],
            "--budget-allowance must be a non-negative integer",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--budget-allowance".into(),
                "lots".into(),
            ],
            "--budget-allowance must be a non-negative integer",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--max-parallel-agents".into(),
                "0".into(),
            ],
            "--max-parallel-agents must be greater than zero",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--agent-provider".into(),
                "nope".into(),
            ],
            "Unknown agent provider: nope",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--model-map".into(),
                "nocolon".into(),
            ],
            "--model-map must use <alias>:<selector>",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--save-raw-sessions".into(),
                "no-such-directory".into(),
            ],
            "--save-raw-sessions must point to an existing directory",
        ),
        (
            vec!["run".into(), hello(), "--args-from-file".into(), bad_json],
            "is not valid JSON",
        ),
        (
            vec!["run".into(), hello(), "--args-from-file".into(), array_json],
            "--args-from-file must contain a JSON or YAML object",
        ),
        (
            vec!["run".into(), hello(), "--args-from-file".into(), bad_yaml],
            "is not valid YAML",
        ),
        (
            // Any extension but .yaml/.yml is read as JSON.
            vec!["run".into(), hello(), "--args-from-file".into(), toml],
            "args.toml is not valid JSON",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--args-from-file".into(),
                "absent.json".into(),
            ],
            "cannot read --args-from-file absent.json",
        ),
        (
            vec!["run".into(), hello(), "--log-level".into(), "loud".into()],
            "--log-level must be one of off, error, warn, info, debug, trace",
        ),
        (
            vec![
                "run".into(),
                hello(),
                "--resume-run".into(),
                "run_nope".into(),
            ],
            "workflow run run_nope was not found",
        ),
        (
            vec!["status".into(), "run_nope".into()],
            "workflow run run_nope was not found",
        ),
        (
            vec!["history".into(), "--state".into(), "sleeping".into()],
            "--state must be one of pending, running, completed, failed, cancelled",
        ),
        (
            vec!["history".into(), "--args-x".into(), "1".into()],
            "--args-<name> and --args-from-file belong to `run`, `submit` and `fork`",
        ),
        (
            // Nothing listens on port 1; the password must not reach the message.
            vec![
                "--db".into(),
                "postgres://app:hunter2@127.0.0.1:1/x".into(),
                "history".into(),
            ],
            "cannot connect to PostgreSQL at postgres://app@127.0.0.1:1/x",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cli.run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let text = stderr(&output);
        assert!(text.starts_with("error: "), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: one line: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert!(
            !text.contains("hunter2"),
            "{args:?}: a password leaked: {text}"
        );
    }
    // An allowance of 0 is allowed: the run starts and fails at its first agent call.
    let output = cli.run(&["run", &hello(), "--budget-allowance", "0"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("error: budget exhausted: spent 0 of 0 output tokens"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|line| line.starts_with("hint: ") && line.contains("--resume-run run_")),
        "{text}"
    );
    let help = cli.run(&["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--resume-run"));
}

#[test]
fn a_failed_run_names_the_resume_command_and_resumes_without_repeating_agents() {
    let cli = Cli::new();
    let failing = format!(
        "{META}const a = await agent(\"one\");\nif (!args.fixed) throw new Error(\"not yet\");\nexport default a;\n"
    );
    let script = cli.write("flaky.mjs", &failing);
    let output = cli.run(&["run", &script]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("Error: not yet"), "{text}");
    let run_id = cli.run_ids().remove(0);
    assert!(
        text.contains(&format!("--resume-run {run_id}")),
        "the hint names the command: {text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[lines.len() - 2].starts_with("error: ")
            && lines[lines.len() - 1].starts_with("hint: "),
        "an error line, then a hint: {text}"
    );
    assert!(
        lines[lines.len() - 1].ends_with(&format!(
            "smol-durable --db {} run {script} --resume-run {run_id}",
            cli.db().display()
        )),
        "a command that pastes: {text}"
    );
    cli.write("flaky.mjs", &failing.replace("!args.fixed", "false"));
    let value = cli.json(&["run", &script, "--resume-run", &run_id]);
    assert_eq!(value["results"], json!("echo: one"));
    assert_eq!(value["runID"], json!(run_id));
    let replayed = cli
        .events(&run_id)
        .iter()
        .filter(|e| e["type"] == json!("workflow.step_replayed"))
        .count();
    assert_eq!(replayed, 1, "the agent was replayed, not called again");
}

#[test]
fn a_killed_run_resumes_from_its_completed_steps() {
    let cli = Cli::new();
    let script = cli.write(
        "slow.mjs",
        &format!(
            "{META}import {{ sleep }} from \"workflow:extra\";\nconst a = await agent(\"before\");\nawait sleep(1500);\nexport default [a, await agent(\"after\")];\n"
        ),
    );
    let mut child = cli.spawn(&["run", &script]);
    let run_id = cli.wait_for_run();
    cli.wait_for_step(&run_id, "sleep", "running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let status = cli.json(&["status", &run_id]);
    assert_eq!(status["state"], json!("running"), "killed mid-run");
    let value = cli.json(&["run", &script, "--resume-run", &run_id]);
    assert_eq!(value["results"], json!(["echo: before", "echo: after"]));
    // The killed process may not have stored its last few events (they are committed in
    // batches); the resumed attempt's events show what it did.
    let events = cli.events(&run_id);
    let count = |kind: &str, prompt: &str| {
        events
            .iter()
            .filter(|e| e["type"] == json!(kind) && e["data"]["promptPreview"] == json!(prompt))
            .count()
    };
    assert_eq!(count("workflow.step_replayed", "before"), 1, "replayed");
    assert!(
        count("workflow.agent_started", "before") <= 1,
        "never called again"
    );
    assert_eq!(count("workflow.agent_started", "after"), 1);
    let replayed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == json!("workflow.step_replayed"))
        .map(|e| &e["data"])
        .collect();
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["kind"], json!("agent"));
    assert!(
        replayed[0]["checkpoint"].as_str().is_some(),
        "{}",
        replayed[0]
    );
}

#[test]
fn ctrl_c_cancels_exits_130_and_leaves_a_resumable_run() {
    let cli = Cli::new();
    let script = cli.write(
        "nap.mjs",
        &format!(
            "{META}import {{ sleep }} from \"workflow:extra\";\nconst a = await agent(\"first\");\nphase(\"napping\");\nlog(\"about to nap\", 60);\nawait sleep(60000);\nexport default a;\n"
        ),
    );
    // SIGINT, SIGTERM and SIGHUP each cancel cooperatively (128 + the signal's number); every
    // time the run stays resumable, and the next attempt resumes it.
    let mut run_id = String::new();
    for (attempt, (signal, code)) in [("INT", 130), ("TERM", 143), ("HUP", 129)]
        .into_iter()
        .enumerate()
    {
        let child = if attempt == 0 {
            let child = cli.spawn(&["run", &script]);
            run_id = cli.wait_for_run();
            cli.wait_for_step(&run_id, "sleep", "running");
            child
        } else {
            let child = cli.spawn(&["run", &script, "--resume-run", &run_id]);
            // Signal once this attempt has logged again (it replayed the agent and is about
            // to sleep); attempts start after the signal handlers are installed.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let logged = cli
                    .events(&run_id)
                    .iter()
                    .filter(|e| e["type"] == json!("workflow.log"))
                    .count();
                if logged == attempt + 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "never resumed");
                std::thread::sleep(Duration::from_millis(50));
            }
            child
        };
        let signalled = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(signalled.success());
        let output = child.wait_with_output().expect("exits");
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "SIG{signal}: {text}");
        assert!(output.stdout.is_empty(), "SIG{signal}: nothing on stdout");
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len();
        assert!(n >= 3, "SIG{signal}: {text}");
        assert!(
            lines.contains(
                &"cancellation requested; finishing in-flight session export if needed..."
            ),
            "SIG{signal}: {text}"
        );
        assert_eq!(lines[n - 2], "error: workflow cancelled", "SIG{signal}");
        assert!(
            lines[n - 1].starts_with("hint: ")
                && lines[n - 1].ends_with(&format!(
                    "smol-durable --db {} run {script} --resume-run {run_id}",
                    cli.db().display()
                )),
            "SIG{signal}: {text}"
        );
        // `[phase]` and `[log]` lines are printed even though stderr is not a terminal, and
        // even when the signal came before they were shown.
        let at = |line: &str| lines.iter().position(|l| *l == line);
        assert!(
            at("[phase] napping").is_some()
                && at("[phase] napping") < at("[log] about to nap 60")
                && at("[log] about to nap 60") < Some(n - 2),
            "SIG{signal}: {text}"
        );
        let status = cli.json(&["status", &run_id]);
        assert_eq!(status["state"], json!("cancelled"), "SIG{signal}");
        assert_eq!(status["attempts"], json!(attempt + 1), "SIG{signal}");
    }
    // Resuming a cancelled run continues it; a shorter script finishes it quickly.
    cli.write(
        "nap.mjs",
        &format!("{META}const a = await agent(\"first\");\nexport default a;\n"),
    );
    let value = cli.json(&["run", &script, "--resume-run", &run_id]);
    assert_eq!(value["results"], json!("echo: first"));
    let called = cli
        .events(&run_id)
        .iter()
        .filter(|e| {
            e["type"] == json!("workflow.agent_started")
                && e["data"]["promptPreview"] == json!("first")
        })
        .count();
    assert_eq!(called, 1, "the agent ran once, then was replayed");
}

#[test]
fn cancel_from_another_process_reports_what_happened() {
    let cli = Cli::new();
    let output = cli.run(&["run", &hello()]);
    assert!(output.status.success());
    let run_id = cli.run_ids().remove(0);
    let output = cli.run(&["cancel", &run_id]);
    assert!(output.status.success());
    assert!(stderr(&output).contains("already finished (completed)"));
    let output = cli.run(&["cancel", "run_nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not found"));

    // A running run: its owner notices and stops; the run stays resumable.
    let script = cli.write(
        "nap.mjs",
        &format!(
            "{META}import {{ sleep }} from \"workflow:extra\";\nawait agent(\"first\");\nawait sleep(60000);\nexport default 1;\n"
        ),
    );
    let child = cli.spawn(&["run", &script]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let napping = loop {
        let ids = cli.run_ids();
        if ids.len() == 2 {
            break ids[0].clone();
        }
        assert!(Instant::now() < deadline, "no second run appeared");
        std::thread::sleep(Duration::from_millis(50));
    };
    cli.wait_for_step(&napping, "sleep", "running");
    let output = cli.run(&["cancel", &napping]);
    assert!(output.status.success());
    assert_eq!(
        stderr(&output),
        format!("cancellation of run {napping} requested; its owner stops within a second\n")
    );
    let output = child.wait_with_output().expect("exits");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("error: workflow cancelled\nhint: "), "{text}");
    assert!(text.contains(&format!("--resume-run {napping}")), "{text}");
    assert_eq!(cli.json(&["status", &napping])["state"], json!("cancelled"));
}

#[test]
fn submitted_runs_wait_for_a_worker_and_report_by_task_id() {
    let cli = Cli::new();
    let submitted = cli.json(&[
        "submit",
        &hello(),
        "--args-name",
        "Ada",
        "--idempotency-key",
        "greet-ada",
    ]);
    assert_eq!(submitted["state"], json!("pending"));
    let task_id = submitted["taskId"].as_str().expect("taskId").to_owned();
    let run_id = submitted["runID"].as_str().expect("runID").to_owned();
    assert!(task_id.starts_with("task_") && run_id.starts_with("run_"));
    assert_eq!(
        submitted.as_object().map(|o| o.len()),
        Some(3),
        "runID, taskId and state: {submitted}"
    );
    let again = cli.run(&["submit", &hello(), "--idempotency-key", "greet-ada"]);
    assert!(again.status.success());
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(
        (&again["runID"], &again["taskId"]),
        (&json!(run_id), &json!(task_id)),
        "the same key is the same run"
    );
    let status = cli.json(&["status", &task_id]);
    assert_eq!(
        (
            status["runID"].as_str(),
            status["taskId"].as_str(),
            status["rootRunId"].as_str(),
            status["state"].as_str()
        ),
        (
            Some(run_id.as_str()),
            Some(task_id.as_str()),
            Some(run_id.as_str()),
            Some("pending")
        )
    );

    let mut worker = cli.spawn(&["worker", "--concurrency", "2"]);
    let started = Instant::now();
    loop {
        let status = cli.json(&["status", &run_id]);
        if status["state"] == json!("completed") {
            assert_eq!(
                status["results"]["greeting"],
                json!("echo: Say hello to Ada")
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker never ran it: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let terminated = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let output = worker.wait_with_output().expect("the worker exits");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("1 claimed, 1 completed"), "{text}");
    worker = cli.spawn(&["worker", "--concurrency", "0"]);
    let output = worker.wait_with_output().expect("exits");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--concurrency must be at least 1"));
}

#[test]
fn the_command_provider_runs_a_program_per_call() {
    let cli = Cli::new();
    let agent = cli.write(
        "agent.sh",
        "read -r request\nprintf '{\"output\": \"answered\", \"usage\": {\"inputTokens\": 1, \"outputTokens\": 7}}'\n",
    );
    let script = cli.write(
        "two.mjs",
        &format!("{META}export default [await agent(\"a\"), await agent(\"b\", {{ provider: \"debug\" }})];\n"),
    );
    let command = format!("sh '{agent}'");
    let value = cli.json(&[
        "run",
        &script,
        "--agent-provider",
        "command",
        "--agent-command",
        &command,
    ]);
    assert_eq!(value["results"], json!(["answered", "echo: b"]));
    assert_eq!(
        value["tokenUsage"]["outputTokens"],
        json!(7 + 3),
        "the command's usage, and \"echo: b\" as 9 JSON bytes"
    );

    let failing = cli.write(
        "fail.sh",
        "cat > /dev/null\necho 'no model today' >&2\nexit 2\n",
    );
    let output = cli.run(&[
        "run",
        &script,
        "--agent-provider",
        "command",
        "--agent-command",
        &format!("sh {failing}"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no model today"),
        "{}",
        stderr(&output)
    );

    let output = cli.run(&["run", &script, "--agent-provider", "command"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("needs --agent-command"));
    let output = cli.run(&[
        "run",
        &script,
        "--agent-provider",
        "command",
        "--agent-command",
        "sh 'unclosed",
    ]);
    assert!(
        stderr(&output).contains("is not a command line"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn raw_sessions_are_saved_one_file_per_call() {
    let cli = Cli::new();
    // The directory must exist: the CLI does not create it.
    let output = cli.run(&["run", &hello(), "--save-raw-sessions", "sessions"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: --save-raw-sessions must point to an existing directory\n"
    );
    assert!(!cli.db().exists(), "refused before the database is opened");
    std::fs::create_dir(cli.dir().join("sessions")).expect("mkdir");
    let output = cli.run(&["run", &hello(), "--save-raw-sessions", "sessions"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run_id = cli.run_ids().remove(0);
    let files: Vec<PathBuf> = std::fs::read_dir(cli.dir().join("sessions").join(&run_id))
        .expect("the run's directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 3, "one file per agent call: {files:?}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("json");
    assert_eq!(saved["provider"], json!("debug"));
    assert_eq!(saved["runId"], json!(run_id));
    assert!(saved["output"].as_str().unwrap().starts_with("echo: "));
}

#[test]
fn history_delete_removes_finished_runs_only() {
    let cli = Cli::new();
    let failing = cli.write(
        "fails.mjs",
        &format!("{META}throw new Error(\"no\");\nexport default 1;\n"),
    );
    assert!(cli.run(&["run", &hello()]).status.success());
    assert_eq!(cli.run(&["run", &failing]).status.code(), Some(1));
    let ids = cli.run_ids();
    assert_eq!(ids.len(), 2);
    let failed_id = ids[0].clone();
    assert_eq!(cli.json(&["status", &failed_id])["state"], json!("failed"));

    let dry = cli.run(&["history", "delete", "--state", "failed", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        plan.starts_with(
            "history delete (dry run) \u{2014} runs in state: failed\n  failed       1\n"
        ),
        "{plan}"
    );
    assert!(
        plan.ends_with(
            "Dry run: no rows were deleted.\nRe-run without --dry-run to delete 1 run(s).\n"
        ),
        "{plan}"
    );
    assert_eq!(cli.run_ids().len(), 2, "a dry run deletes nothing");

    let deleted = cli.run(&["history", "delete", "--state", "failed"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let summary = String::from_utf8_lossy(&deleted.stdout).into_owned();
    assert!(
        summary.contains("\nDeleted 1 run(s).\n  steps: 0, attempts: 1, "),
        "{summary}"
    );
    let remaining = cli.json(&["history", "-o", "json"]);
    assert_eq!(remaining.as_array().map(Vec::len), Some(1));
    assert_eq!(remaining[0]["state"], json!("completed"));
    assert!(stderr(&cli.run(&["status", &failed_id])).contains("not found"));

    for (args, expected) in [
        (
            vec!["history", "delete"],
            "history delete requires either --all or at least one --state <state>",
        ),
        (
            vec!["history", "delete", "--all", "--state", "failed"],
            "history delete: --all cannot be combined with --state",
        ),
    ] {
        let output = cli.run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&output), format!("error: {expected}\n"), "{args:?}");
    }
    // Unfinished runs are never deleted: asking for them matches nothing.
    let running = cli.run(&["history", "delete", "--state", "running"]);
    assert!(running.status.success(), "{}", stderr(&running));
    assert_eq!(
        String::from_utf8_lossy(&running.stdout),
        "history delete \u{2014} runs in state: running\n\nNo runs matched; nothing to delete.\n"
    );
    let all = cli.run(&["history", "delete", "--all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let summary = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(
        summary.starts_with("history delete \u{2014} all runs\n  completed    1\n"),
        "{summary}"
    );
    assert!(summary.contains("\nDeleted 1 run(s).\n"), "{summary}");
    assert!(cli.run_ids().is_empty());
}

#[test]
fn every_example_workflow_runs_with_the_debug_provider() {
    let cli = Cli::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/workflows")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "mjs"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 8, "{scripts:?}");
    for script in scripts {
        // A workflow that waits for a person gets an answer in time: nobody's.
        let waits = std::fs::read_to_string(&script)
            .expect("read")
            .contains("waitFor");
        let script = script.display().to_string();
        let mut args = vec!["run", script.as_str(), "--budget-allowance", "1000"];
        if waits {
            args.extend(["--args-timeoutMs", "50"]);
        }
        let value = cli.json(&args);
        assert!(value["runID"].as_str().is_some(), "{script}: {value}");
    }
}

#[test]
fn the_openai_provider_talks_to_a_compatible_endpoint() {
    use smol_durable_testkit::{StubHttpServer, StubResponse};
    let server = StubHttpServer::start(vec![StubResponse::json(
        200,
        json!({
            "id": "chatcmpl-9",
            "model": "stub",
            "choices": [{ "message": { "role": "assistant", "content": "from the stub" } }],
            "usage": { "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10 }
        }),
    )]);
    let cli = Cli::new();
    let script = cli.write(
        "ask.mjs",
        &format!("{META}export default await agent(\"ask\");\n"),
    );
    let output = cli
        .command(&["run", &script, "--agent-provider", "openai"])
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-local")
        .env("OPENAI_MODEL", "stub-model")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(value["results"], json!("from the stub"));
    assert_eq!(value["tokenUsage"]["outputTokens"], json!(6));
    let sent = server.requests();
    assert_eq!(sent[0].json()["model"], json!("stub-model"));
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-local"));
}

#[test]
fn model_map_and_agent_cap_shape_the_calls() {
    let cli = Cli::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/multi_phase.mjs")
        .display()
        .to_string();
    let output = cli.run(&[
        "run",
        &script,
        "--model-map",
        "fast:vendor/fast-1",
        "--max-parallel-agents",
        "1",
        "--events",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == json!("workflow.agent_started"))
        .collect();
    assert_eq!(started.len(), 4);
    for event in &started {
        let prompt = event["data"]["promptPreview"].as_str().unwrap();
        let completed = events
            .iter()
            .find(|e| {
                e["type"] == json!("workflow.agent_completed")
                    && e["metadata"]["stepId"] == event["metadata"]["stepId"]
            })
            .expect("completed");
        // The debug provider answers with the model the rewritten options name.
        let model = &completed["data"]["model"];
        if prompt.starts_with("outline") {
            assert_eq!(event["data"]["phase"], json!("plan"), "{event}");
            assert_eq!(model, &json!("vendor/fast-1"), "{completed}");
        } else {
            assert_eq!(event["data"]["phase"], json!("write"), "{event}");
            assert!(model.is_null(), "{completed}");
        }
    }
    // With a cap of one, every call completes before the next starts.
    let order: Vec<&str> = events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("workflow.agent_"))
        .collect();
    for pair in order.chunks(2) {
        assert_eq!(pair, ["workflow.agent_started", "workflow.agent_completed"]);
    }
    // Events name the stored steps: each stepId is a step `history` shows.
    let run_id = cli.run_ids().remove(0);
    let detail = cli.json(&["history", &run_id, "-o", "json"]);
    let stored: Vec<&Value> = detail["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| &step["stepId"])
        .collect();
    for event in &started {
        assert!(
            stored.contains(&&event["metadata"]["stepId"]),
            "{event} names no stored step: {stored:?}"
        );
    }
}

#[test]
fn events_follow_waits_for_the_run_to_finish() {
    let cli = Cli::new();
    let script = cli.write(
        "later.mjs",
        &format!("{META}import {{ sleep }} from \"workflow:extra\";\nawait sleep(700);\nexport default await agent(\"done\");\n"),
    );
    let mut run = cli.spawn(&["run", &script]);
    let run_id = cli.wait_for_run();
    let follow = cli.run(&["events", &run_id, "--follow"]);
    assert!(follow.status.success(), "{}", stderr(&follow));
    let last = String::from_utf8_lossy(&follow.stdout)
        .lines()
        .last()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .expect("events");
    assert_eq!(
        last["type"],
        json!("workflow.result"),
        "followed to the end"
    );
    assert!(run.wait().expect("run exits").success());
}

#[cfg(unix)]
#[test]
fn a_non_utf8_argument_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let cli = Cli::new();
    let output = Command::new(env!("CARGO_BIN_EXE_smol-durable"))
        .arg("run")
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9.mjs"))
        .env("SMOL_DURABLE_DB", cli.db())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: argument"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn scripts_run_isolated_by_default_under_a_cpu_limit_or_in_process_on_request() {
    let cli = Cli::new();
    let spin = cli.write(
        "spin.mjs",
        "export const meta = { name: \"spin\", description: \"spins\" };\nwhile (true) {}\nexport default 1;\n",
    );
    let started = Instant::now();
    let output = cli.run(&["run", &spin, "--script-cpu-seconds", "1"]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("CPU time limit of 1 s"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The same binary still runs well-behaved scripts either way.
    for engine in ["isolated", "in-process"] {
        let output = cli.json(&[
            "--script-engine",
            engine,
            "run",
            &hello(),
            "--args-name",
            "Ada",
        ]);
        assert_eq!(
            output["results"]["greeting"],
            json!("echo: Say hello to Ada"),
            "{engine}"
        );
    }
    let output = cli.run(&["--script-engine", "elsewhere", "run", &hello()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("isolated, in-process"),
        "{}",
        stderr(&output)
    );
}

// Security review (docs/reliability.md#security): each property a test.

#[cfg(unix)]
#[test]
fn the_database_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    // A slow call keeps the WAL and shared-memory files present while the mode is read.
    let script = cli.write(
        "slow.mjs",
        &format!("{META}import {{ sleep }} from \"workflow:extra\";\nawait agent(\"a\");\nawait sleep(1500);\nexport default 1;\n"),
    );
    let mut child = cli.spawn(&["run", &script]);
    let db = cli.db();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wal.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in [
        db.clone(),
        wal,
        PathBuf::from(format!("{}-shm", db.display())),
    ] {
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{} has mode {:o}",
            path.display(),
            mode & 0o777
        );
    }
    let directory = std::fs::metadata(db.parent().expect("a directory"))
        .expect("directory")
        .permissions()
        .mode();
    assert_eq!(directory & 0o777, 0o700, "the directory the CLI created");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn an_api_key_never_reaches_the_database_events_or_logs() {
    use smol_durable_testkit::{StubHttpServer, StubResponse};
    const KEY: &str = "sk-test-NEVER-STORE-THIS-0123456789";
    let answer = StubResponse::json(
        200,
        json!({
            "id": "chatcmpl-1",
            "model": "stub",
            "choices": [{ "message": { "role": "assistant", "content": "ok" } }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }
        }),
    );
    // The second call is refused, so error paths are covered too.
    let refusal = StubResponse::json(401, json!({ "error": { "message": "bad key" } }));
    let server = StubHttpServer::start(vec![answer, refusal]);
    let cli = Cli::new();
    let sessions = cli.dir().join("sessions");
    std::fs::create_dir(&sessions).expect("mkdir");
    let script = cli.write(
        "ask.mjs",
        &format!("{META}const a = await agent(\"ask\");\nlet b;\ntry {{ b = await agent(\"again\"); }} catch (e) {{ b = String(e); }}\nexport default [a, b];\n"),
    );
    let output = cli
        .command(&[
            "run",
            &script,
            "--agent-provider",
            "openai",
            "--log-level",
            "trace",
        ])
        .args(["--save-raw-sessions", sessions.to_str().unwrap()])
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", KEY)
        .env("OPENAI_MODEL", "stub-model")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    let run_id = cli.run_ids().pop().expect("a run");
    let events = cli.run(&["events", &run_id]);
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("stdout".into(), output.stdout.clone()),
        ("stderr".into(), output.stderr.clone()),
        ("events".into(), events.stdout),
    ];
    let mut files = vec![
        cli.db(),
        PathBuf::from(format!("{}-wal", cli.db().display())),
    ];
    for entry in walk(&sessions) {
        files.push(entry);
    }
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            places.push((file.display().to_string(), bytes));
        }
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(KEY), "the API key leaked into {place}");
        assert!(
            !text.contains("NEVER-STORE"),
            "part of the API key leaked into {place}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn the_command_provider_runs_its_program_without_a_shell() {
    let cli = Cli::new();
    let marker = cli.dir().join("pwned");
    // Shell syntax in the configured command and in the prompt stays inert text.
    let command = format!(
        "/bin/echo $(touch {m}) `touch {m}` ; touch {m}",
        m = marker.display()
    );
    let script = cli.write(
        "inject.mjs",
        &format!(
            "{META}export default await agent(\"$(touch {m}) `touch {m}`; touch {m}\");\n",
            m = marker.display()
        ),
    );
    let output = cli.run(&[
        "run",
        &script,
        "--agent-provider",
        "command",
        "--agent-command",
        &command,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_slice(&output.stdout).expect("json");
    // echo printed its arguments verbatim: no shell expanded them.
    let printed = value["results"].as_str().unwrap_or_default().to_owned();
    assert!(printed.contains("$(touch"), "{printed}");
    assert!(
        !marker.exists(),
        "a shell ran part of the command or prompt"
    );
}

#[cfg(unix)]
#[test]
fn imports_and_child_workflows_cannot_leave_the_workflow_directory_through_symlinks() {
    let cli = Cli::new();
    let outside = cli.write(
        "outside.mjs",
        &format!("{META}export const secret = 42;\nexport default 42;\n"),
    );
    let root = cli.dir().join("flows");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::os::unix::fs::symlink(&outside, root.join("link.mjs")).expect("symlink");
    let importer = root.join("import.mjs");
    std::fs::write(
        &importer,
        format!("{META}import {{ secret }} from \"./link.mjs\";\nexport default secret;\n"),
    )
    .expect("write");
    let caller = root.join("call.mjs");
    std::fs::write(
        &caller,
        format!("{META}export default await workflow({{ scriptPath: \"./link.mjs\" }});\n"),
    )
    .expect("write");
    for script in [&importer, &caller] {
        let output = cli.run(&["run", script.to_str().unwrap()]);
        assert!(
            !output.status.success(),
            "{} must be refused",
            script.display()
        );
        let error = stderr(&output);
        assert!(error.contains("outside"), "{}: {error}", script.display());
    }
}
