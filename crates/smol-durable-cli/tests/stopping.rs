//! No command leaves a run `running` behind its back: a reader that goes away (of stdout or
//! stderr) ends the output
//! while the run goes on, a cancel from another process stops a run within a second (before
//! any further agent call starts, in a sleep too), and a run whose process was killed says so.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::{stderr, Cli};

const META: &str = "export const meta = { name: \"stopping\", description: \"stops\" };\n";

/// A command-line provider that logs each call it starts, then takes `seconds` to answer.
fn slow_provider(cli: &Cli, seconds: f64) -> (String, PathBuf) {
    let log = cli.path("calls.log");
    let script = cli.write(
        "provider.sh",
        &format!(
            "#!/bin/sh\ncat > /dev/null\necho start >> '{}'\nsleep {seconds}\necho '{{\"output\": \"done\"}}'\n",
            log.display()
        ),
    );
    (format!("sh {script}"), log)
}

fn calls_started(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
}

/// `run` of a script whose first call completed and which now sleeps 45 s; its process and
/// run id, once the sleep is stored.
fn napping_run(cli: &Cli, options: &[&str]) -> (Child, String) {
    let script = cli.write(
        "nap.mjs",
        &format!("{META}import {{ sleep }} from \"workflow:extra\";\nawait agent('first call');\nawait sleep(45000);\nexport default 1;\n"),
    );
    let mut args = vec!["run", script.as_str()];
    args.extend_from_slice(options);
    let child = cli.spawn(&args);
    let run_id = cli.wait_for_run();
    cli.wait_for_step(&run_id, "sleep", "running");
    (child, run_id)
}

#[test]
fn a_reader_that_goes_away_ends_the_output_and_the_run_goes_on() {
    let cli = Cli::new();
    let script = cli.write(
        "many.mjs",
        &format!("{META}const out = [];\nfor (let i = 0; i < 20; i++) out.push(await agent('call ' + i));\nexport default out.length;\n"),
    );
    // `run --events | head -2`.
    let mut child = cli.spawn(&["run", &script, "--events"]);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..2 {
        lines.next().expect("a line").expect("text");
    }
    drop(lines);
    let output = child.wait_with_output().expect("exits");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    let run_id = cli.wait_for_run();
    assert_eq!(cli.json(&["status", &run_id])["state"], "completed");
    // A command whose reader is gone before it writes.
    for args in [
        vec!["history"],
        vec!["history", "-o", "json"],
        vec!["events", &run_id],
        vec!["status", &run_id],
    ] {
        let mut child = cli.spawn(&args);
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("exits");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_closed_stderr_loses_the_diagnostics_not_the_runs() {
    let cli = Cli::new();
    let script = cli.write(
        "small.mjs",
        &format!("{META}export default await agent('one');\n"),
    );
    // `worker 2>&1 | head -1`: the worker logs each run it claims, long after the reader of
    // its stderr is gone.
    let mut worker = cli.spawn(&["worker", "--concurrency", "1"]);
    let first = cli.json(&["submit", &script]);
    let mut lines = BufReader::new(worker.stderr.take().expect("stderr")).lines();
    lines.next().expect("a line").expect("text");
    drop(lines);
    let mut runs = vec![first["runID"].as_str().expect("runID").to_owned()];
    for _ in 0..3 {
        let submitted = cli.json(&["submit", &script]);
        runs.push(submitted["runID"].as_str().expect("runID").to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for run_id in &runs {
        while cli.json(&["status", run_id])["state"] != "completed" {
            assert!(
                worker.try_wait().expect("wait").is_none(),
                "the worker died with its stderr"
            );
            assert!(Instant::now() < deadline, "run {run_id} never completed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = worker.wait().expect("exits");
    assert!(status.success(), "the worker stops cleanly: {status}");
}

#[test]
fn a_cancel_from_another_process_stops_a_sleeping_run_within_a_second() {
    let cli = Cli::new();
    let (child, run_id) = napping_run(&cli, &[]);
    let asked = Instant::now();
    let output = cli.run(&["cancel", &run_id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = child.wait_with_output().expect("exits");
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("error: workflow cancelled"), "{text}");
    assert!(
        !text.contains("failed"),
        "a cancelled run is not reported as failed: {text}"
    );
    let status = cli.json(&["status", &run_id]);
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["error"]["message"], "workflow cancelled");
}

#[test]
fn no_agent_call_starts_after_a_cancel_is_seen() {
    let cli = Cli::new();
    let (command, log) = slow_provider(&cli, 3.0);
    let script = cli.write(
        "calls.mjs",
        &format!("{META}const out = [];\nfor (let i = 0; i < 10; i++) out.push(await agent('call ' + i));\nexport default out;\n"),
    );
    let child = cli.spawn(&[
        "run",
        &script,
        "--agent-provider",
        "command",
        "--agent-command",
        &command,
    ]);
    let run_id = cli.wait_for_run();
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls_started(&log) < 1 {
        assert!(Instant::now() < deadline, "no call started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    assert!(cli.run(&["cancel", &run_id]).status.success());
    let output = child.wait_with_output().expect("exits");
    // The call in flight (3 s) was stopped, not waited for, and none came after it.
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(calls_started(&log), 1, "{}", stderr(&output));
    assert_eq!(cli.json(&["status", &run_id])["state"], "cancelled");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(calls_started(&log), 1, "nothing started later either");
}

#[test]
fn a_killed_run_says_its_owner_is_gone_and_what_it_spent() {
    let cli = Cli::new();
    let (mut child, run_id) = napping_run(&cli, &[]);
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let output = cli.run(&["status", &run_id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(status["state"], "running");
    assert_eq!(status["ownerGone"], true);
    assert_eq!(
        status["tokenUsage"]["outputTokens"], 5,
        "the completed call's tokens"
    );
    assert!(
        stderr(&output).contains("is running (owner gone; resume it): smol-durable --db "),
        "{}",
        stderr(&output)
    );
    let table = cli.run(&["history"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("running (owner gone; resume it)"), "{text}");
    // `events --follow` ends instead of waiting for a run nobody executes.
    let started = Instant::now();
    let follow = cli.run(&["events", &run_id, "--follow"]);
    assert!(follow.status.success(), "{}", stderr(&follow));
    assert!(started.elapsed() < Duration::from_secs(10));
    // What was stored before the kill (a killed process may lose its last few events).
    let printed = String::from_utf8_lossy(&follow.stdout);
    assert!(
        printed.starts_with("{\"type\":\"workflow.started\""),
        "{printed}"
    );
}

#[test]
fn the_owner_gone_note_of_a_command_provider_run_asks_for_its_program() {
    let cli = Cli::new();
    let (command, _log) = slow_provider(&cli, 0.0);
    let (mut child, run_id) = napping_run(
        &cli,
        &["--agent-provider", "command", "--agent-command", &command],
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let output = cli.run(&["status", &run_id]);
    let note = stderr(&output);
    assert!(
        note.contains(&format!(
            "--resume-run {run_id} --agent-command '<the program it ran with>'"
        )),
        "{note}"
    );
}
