//! Humans in the loop through the real binary: `run` waiting in place for a signal from another
//! process, `--detach-on-wait`, `signal [--resume]`, `waits`, and what `history` and `status`
//! say about a waiting run.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{stderr, Cli};

const APPROVAL: &str = r#"export const meta = { name: "approval", description: "asks a human" };
import { waitFor, runId } from "workflow:extra";
const plan = await agent("Draft a plan");
const answer = await waitFor("approval", { description: "Approve the plan?", schema: { type: "object", required: ["ok"] } });
export default { plan, answer, runId };
"#;

/// The open waits `waits -o json` lists, once there are `count`.
fn open_waits(cli: &Cli, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Read-only commands fail until the spawned run has created the database.
        let output = cli.run(&["waits", "-o", "json"]);
        let listed: Value = if output.status.success() {
            serde_json::from_slice(&output.stdout).expect("JSON")
        } else {
            Value::Null
        };
        let waits = listed.as_array().cloned().unwrap_or_default();
        if output.status.success() && waits.len() >= count {
            return waits;
        }
        assert!(Instant::now() < deadline, "never {count} open waits");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_waits_in_place_and_continues_when_another_process_signals() {
    let cli = Cli::new();
    let script = cli.write("approval.mjs", APPROVAL);
    let child = cli.spawn(&["run", &script]);
    let waits = open_waits(&cli, 1);
    let run_id = waits[0]["runId"].as_str().unwrap().to_owned();
    assert_eq!(waits[0]["names"], json!(["approval"]));
    assert_eq!(waits[0]["description"], json!("Approve the plan?"));
    assert_eq!(waits[0]["deadline"], Value::Null);

    let table = cli.ok(&["waits"]);
    assert!(table.starts_with("RUN ID"), "{table}");
    assert!(
        table.contains(&run_id) && table.contains("Approve the plan?"),
        "{table}"
    );
    let history = cli.ok(&["history"]);
    assert!(history.contains("waiting (approval)"), "{history}");
    let status = cli.json(&["status", &run_id]);
    assert_eq!(status["waitingFor"][0]["names"], json!(["approval"]));

    // A payload the wait's schema refuses is refused at send time, with the reason.
    let refused = cli.fails(&["signal", &run_id, "approval", "--data", "{\"nope\": 1}"]);
    assert!(refused.contains("does not match the schema"), "{refused}");
    let bad_json = cli.fails(&["signal", &run_id, "approval", "--data", "{ok"]);
    assert!(bad_json.contains("is not JSON"), "{bad_json}");

    let receipt = cli.json(&["signal", &run_id, "approval", "--data", "{\"ok\": true}"]);
    assert_eq!(receipt["delivered"], json!(true));
    assert_eq!(receipt["duplicate"], json!(false));
    let output = child.wait_with_output().expect("run exits");
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "[wait] {run_id} waits for \"approval\": Approve the plan? (no deadline)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("signal {run_id} approval --data '<JSON>'")),
        "{text}"
    );
    assert!(text.contains("[wait] \"approval\" received"), "{text}");
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(result["results"]["answer"], json!({ "ok": true }));
    assert_eq!(result["results"]["runId"], json!(run_id));

    let finished = cli.fails(&["signal", &run_id, "approval"]);
    assert!(
        finished.contains("is completed and cannot be signalled"),
        "{finished}"
    );
    let unknown = cli.fails(&["signal", "run_nope", "approval"]);
    assert!(unknown.contains("run_nope was not found"), "{unknown}");
    let events: Vec<String> = cli
        .events(&run_id)
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in [
        "workflow.wait_started",
        "workflow.signal_received",
        "workflow.wait_completed",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected}: {events:?}"
        );
    }
}

#[test]
fn detach_on_wait_exits_3_and_signal_resume_continues_the_run_here() {
    let cli = Cli::new();
    let script = cli.write("approval.mjs", APPROVAL);
    let output = cli.run(&["run", &script, "--detach-on-wait"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(printed["state"], json!("waiting"));
    assert!(
        text.contains("waits for a signal; it was handed back"),
        "{text}"
    );
    let waits = open_waits(&cli, 1);
    let run_id = waits[0]["runId"].as_str().unwrap().to_owned();
    assert_eq!(cli.json(&["status", &run_id])["state"], json!("pending"));

    let data = cli.write("answer.json", "{\"ok\": \"yes\"}");
    let keyed = [
        "signal",
        &run_id,
        "approval",
        "--data-file",
        &data,
        "--idempotency-key",
        "k1",
        "--resume",
    ];
    let output = cli.run(&keyed);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    let receipt: Value = serde_json::from_str(text.lines().next().unwrap()).expect("receipt");
    assert_eq!(receipt["delivered"], json!(true));
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(result["results"]["answer"], json!({ "ok": "yes" }));
    assert_eq!(result["runID"], json!(run_id));
    assert!(open_waits(&cli, 0).is_empty());
    let detail = cli.json(&["history", &run_id, "-o", "json"]);
    assert_eq!(detail["workflowRun"]["state"], json!("completed"));
    assert_eq!(
        detail["tokenUsage"]["outputTokens"], result["tokenUsage"]["outputTokens"],
        "the agent was replayed, not paid again"
    );
}

#[test]
fn a_run_killed_while_waiting_resumes_with_the_same_deadline() {
    let cli = Cli::new();
    let script = cli.write(
        "deadline.mjs",
        r#"export const meta = { name: "deadline", description: "waits ten minutes at most" };
import { waitFor } from "workflow:extra";
const plan = await agent("plan");
export default { plan, answer: await waitFor("go", { timeoutMs: 600000 }) };
"#,
    );
    let mut child = cli.spawn(&["run", &script]);
    let before = open_waits(&cli, 1);
    let run_id = before[0]["runId"].as_str().unwrap().to_owned();
    let deadline = before[0]["deadline"].clone();
    assert!(deadline.is_string(), "{deadline}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    std::thread::sleep(Duration::from_millis(50));
    // The killed process leaves the run `running`; a resume takes it over and waits again.
    let resumed = cli.spawn(&["run", &script, "--resume-run", &run_id]);
    let deadline_after = loop {
        let waits = open_waits(&cli, 1);
        let steps = cli.json(&["history", &run_id, "-o", "json"]);
        let attempts = steps["attempts"].as_array().map_or(0, Vec::len);
        if attempts == 2 {
            break waits[0]["deadline"].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(deadline_after, deadline, "the deadline never restarts");
    let receipt = cli.json(&["signal", &run_id, "go", "--data", "\"now\""]);
    assert_eq!(receipt["delivered"], json!(true));
    let output = resumed.wait_with_output().expect("exits");
    assert!(output.status.success(), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        result["results"],
        json!({ "plan": "echo: plan", "answer": "now" })
    );
}

#[test]
fn signal_to_a_missing_database_creates_nothing() {
    let cli = Cli::new();
    let message = cli.fails(&["signal", "run_x", "go"]);
    assert!(message.contains("signal database"), "{message}");
    assert!(message.contains("was not found"), "{message}");
    assert!(!cli.db().exists(), "nothing was created");
}
