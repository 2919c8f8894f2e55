//! `fork` and `replay` through the real binary: a fork runs like `run` and `history` shows its
//! lineage; a replay reports identical runs (exit 0, database bytes unchanged, no agent called)
//! and divergences with the script's location and a diff (exit 1); runs of smol-wf 0.3.4 replay.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{stderr, Cli};

const REVIEW: &str = r#"import { sleep } from "workflow:extra";
export const meta = { name: 'review', description: 'plan, wait, review' };
phase('Plan');
const plan = await agent(`plan for ${args.topic}`);
await sleep(1);
phase('Review');
const review = await agent('review the plan');
const notes = await agent('write notes');
export default { plan, review, notes, spent: budget.spent() };
"#;

/// The run of `review.mjs`, completed, and its id.
fn reviewed(cli: &Cli) -> String {
    cli.write("review.mjs", REVIEW);
    let output = cli.json(&["run", "review.mjs", "--args-topic", "tests"]);
    output["runID"].as_str().expect("runID").to_owned()
}

/// The `command` provider with a program that counts its calls in `calls.log`.
const COUNTED: [&str; 4] = [
    "--agent-provider",
    "command",
    "--agent-command",
    "sh -c 'cat > /dev/null; echo call >> calls.log; echo answer'",
];

fn calls(cli: &Cli) -> usize {
    std::fs::read_to_string(cli.path("calls.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read the database")
}

#[test]
fn a_run_replays_identically_without_calling_an_agent_or_writing() {
    let cli = Cli::new();
    let run_id = reviewed(&cli);
    let before = bytes(&cli.db());
    let text = cli.ok(&["replay", run_id.as_str()]);
    assert!(
        text.contains("Verdict:   identical: the script replays the run"),
        "{text}"
    );
    assert!(text.contains("Replayed:  4 calls"), "{text}");
    assert_eq!(bytes(&cli.db()), before, "the database is unchanged");
    let report = cli.json(&["replay", &run_id, "-o", "json"]);
    assert_eq!(report["verdict"]["verdict"], json!("identical"));
    let recorded = cli.json(&["history", &run_id, "-o", "json"]);
    assert_eq!(
        report["result"], recorded["results"],
        "the same result, `budget.spent()` included"
    );
}

#[test]
fn an_edited_script_diverges_at_its_call_with_a_diff() {
    let cli = Cli::new();
    let run_id = reviewed(&cli);
    cli.write(
        "edited.mjs",
        &REVIEW.replace("'review the plan'", "'review the plan twice'"),
    );
    let output = cli.run(&["replay", &run_id, "--script", "edited.mjs"]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        text.contains("diverged: the script makes a call the run never made"),
        "{text}"
    );
    assert!(text.contains("agent call at edited.mjs:7:"), "{text}");
    assert!(text.contains("recorded: step 3 (agent"), "{text}");
    assert!(
        text.contains("    - review the plan\n    + review the plan twice\n"),
        "{text}"
    );
    assert!(text.contains("Unreached: 2 completed steps"), "{text}");
    let output = cli.run(&["replay", &run_id, "--script", "edited.mjs", "-o", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["verdict"]["verdict"], json!("diverged"));
    let call = &report["verdict"]["call"];
    assert_eq!(call["site"]["line"], json!(7));
    assert!(call["site"]["file"]
        .as_str()
        .unwrap()
        .ends_with("edited.mjs"));
    // A shorter script leaves the last step unreached.
    cli.write(
        "shorter.mjs",
        &REVIEW.replace(
            "const notes = await agent('write notes');",
            "const notes = null;",
        ),
    );
    let output = cli.run(&["replay", &run_id, "--script", "shorter.mjs"]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("without reaching completed steps"), "{text}");
    assert!(text.contains("step 4 (agent"), "{text}");
}

#[test]
fn a_fork_runs_like_run_and_history_shows_its_lineage() {
    let cli = Cli::new();
    let run_id = reviewed(&cli);
    cli.write(
        "edited.mjs",
        &REVIEW.replace("'review the plan'", "'review the plan twice'"),
    );
    let output = cli.run(&[
        "fork",
        &run_id,
        "--before-step",
        "3",
        "--script",
        "edited.mjs",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).expect("run's JSON");
    let fork_id = result["runID"].as_str().expect("runID").to_owned();
    assert_ne!(fork_id, run_id);
    assert_eq!(
        result["results"]["review"],
        json!("echo: review the plan twice")
    );
    // The fork spent only what it ran (steps 3 and 4), not what it copied.
    let spent = &result["tokenUsage"]["outputTokens"];
    assert_eq!(&result["results"]["spent"], spent);
    let forked = cli.json(&["history", &fork_id, "-o", "json"]);
    let output_of = |step: usize| forked["steps"][step]["tokenUsage"]["outputTokens"].as_u64();
    assert_eq!(
        spent.as_u64(),
        Some(output_of(2).unwrap() + output_of(3).unwrap())
    );
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "forked from {run_id} with 2 completed steps copied"
        )),
        "{err}"
    );
    assert!(err.contains("[phase] Review"), "{err}");
    let detail = cli.ok(&["history", &fork_id]);
    assert!(
        detail.contains(&format!("Forked:    {run_id} before step 3 (step:sig_")),
        "{detail}"
    );
    assert!(
        detail.contains("2 steps copied (10 tokens, spent by the source)"),
        "{detail}"
    );
    assert!(detail.contains("\n#  KIND   STATE"), "{detail}");
    let json = cli.json(&["history", &fork_id, "-o", "json"]);
    let origin = &json["workflowRun"]["forkedFrom"];
    assert_eq!(origin["runId"], json!(run_id));
    assert_eq!(
        (&origin["beforeStep"], &origin["copiedSteps"]),
        (&json!(3), &json!(2))
    );
    let numbers: Vec<&Value> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["number"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3), &json!(4)]);
    // The source is unchanged, and its own history has no lineage.
    let source = cli.json(&["history", &run_id, "-o", "json"]);
    assert!(source["workflowRun"].get("forkedFrom").is_none());
    // The fork replays identically: its copies are its recording.
    assert!(cli.ok(&["replay", &fork_id]).contains("identical"));
}

#[test]
fn a_fork_that_leaves_steps_unreached_warns_and_arguments_are_laid_over() {
    let cli = Cli::new();
    let run_id = reviewed(&cli);
    cli.write(
        "shorter.mjs",
        &REVIEW.replace(
            "const notes = await agent('write notes');",
            "const notes = null;",
        ),
    );
    let output = cli.run(&["fork", run_id.as_str(), "--script", "shorter.mjs"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("warning: 1 completed step recorded before this attempt was not reached again; the first: step 4, agent step:sig_"),
        "{err}"
    );
    // Changed arguments: the first call changes (and runs), the rest replays; the arguments
    // not given are the source's.
    let output = cli.run(&[
        "fork",
        &run_id,
        "--args-topic",
        "docs",
        "--args-extra",
        "yes",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(result["results"]["plan"], json!("echo: plan for docs"));
    let fork_id = result["runID"].as_str().unwrap();
    let detail = cli.json(&["history", fork_id, "-o", "json"]);
    assert_eq!(
        detail["workflowRun"]["args"],
        json!({ "topic": "docs", "extra": "yes" })
    );
}

/// Counted by the agent program itself: a replay calls no agent, and neither does a fork of
/// every step with the same script (its copies replay).
#[test]
fn replays_and_forks_of_unchanged_work_call_no_agent() {
    let cli = Cli::new();
    cli.write("review.mjs", REVIEW);
    let mut args = vec!["run", "review.mjs", "--args-topic", "tests"];
    args.extend(COUNTED);
    let output = cli.json(&args);
    let run_id = output["runID"].as_str().unwrap().to_owned();
    assert_eq!(calls(&cli), 3);
    let mut args = vec!["replay", run_id.as_str()];
    args.extend(COUNTED);
    assert!(cli.ok(&args).contains("identical"));
    assert_eq!(calls(&cli), 3, "the replay called no agent");
    let mut args = vec!["fork", run_id.as_str()];
    args.extend(COUNTED);
    let fork = cli.json(&args);
    assert_eq!(fork["tokenUsage"]["outputTokens"], json!(0));
    assert_eq!(calls(&cli), 3, "every call of the fork replayed its copy");
    // Another provider is another identity: the copies of the command's calls run again.
    let forked = cli.json(&["fork", run_id.as_str(), "--agent-provider", "debug"]);
    assert_eq!(forked["results"]["review"], json!("echo: review the plan"));
    assert_eq!(calls(&cli), 3);
}

#[test]
fn fork_submit_queues_the_fork_and_bad_forks_are_refused() {
    let cli = Cli::new();
    let run_id = reviewed(&cli);
    let queued = cli.json(&["fork", &run_id, "--before-step", "2", "--submit"]);
    assert_eq!(queued["state"], json!("pending"));
    assert_eq!(queued["forkedFrom"], json!(run_id));
    let fork_id = queued["runID"].as_str().unwrap();
    let detail = cli.json(&["history", fork_id, "-o", "json"]);
    assert_eq!(detail["workflowRun"]["forkedFrom"]["copiedSteps"], json!(1));
    let err = cli.fails(&["fork", &run_id, "--before-step", "9"]);
    assert!(
        err.contains("has no step 9: its steps are numbered 1 to 4"),
        "{err}"
    );
    let err = cli.fails(&["fork", &run_id, "--before-step", "step:sig_nope"]);
    assert!(err.contains("has no step named \"step:sig_nope\""), "{err}");
    let err = cli.fails(&["fork", "run_missing"]);
    assert!(err.contains("run_missing was not found"), "{err}");
    let err = cli.fails(&["replay", "run_missing"]);
    assert!(err.contains("run_missing was not found"), "{err}");
}

/// The databases smol-wf 0.3.4 left behind replay identically, given the flags their runs
/// were started with (smol-wf stored no model map), and stay byte for byte as they were.
#[test]
fn runs_of_smol_wf_replay_identically() {
    let cli = Cli::new();
    let dbs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/dbs");
    for entry in std::fs::read_dir(&dbs).expect("dbs") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".mjs") || name.starts_with("smolwf-0.3.4-") && name.ends_with(".db") {
            std::fs::copy(&path, cli.path(&name)).expect("copy");
        }
    }
    let map = [
        "--model-map",
        "smart:claude-x?thinking=low",
        "--model-map",
        "fast:openai/gpt-5",
    ];
    for (db, stopped_at) in [
        ("smolwf-0.3.4-a-budget-failed.db", None),
        ("smolwf-0.3.4-b-killed-in-sleep.db", Some("step 3 (sleep")),
        ("smolwf-0.3.4-c-child-sleep-completed.db", None),
        (
            "smolwf-0.3.4-d-cancelled-in-sleep.db",
            Some("step 2 (sleep"),
        ),
        (
            "smolwf-0.3.4-e-child-killed-in-sleep.db",
            Some("step 5 (sleep"),
        ),
    ] {
        let db_path = cli.path(db);
        let before = bytes(&db_path);
        let db_flag = db_path.display().to_string();
        let list = cli.json(&["--db", &db_flag, "history", "-o", "json"]);
        let run_id = list[0]["runID"].as_str().unwrap().to_owned();
        let mut args = vec!["--db", db_flag.as_str(), "replay", run_id.as_str()];
        // No provider flag: smol-wf's runs name the default provider (debug) in their steps.
        args.extend(map);
        let text = cli.ok(&args);
        assert!(text.contains("identical"), "{db}: {text}");
        match stopped_at {
            Some(step) => assert!(
                text.contains(&format!("Stopped:   at {step}")),
                "{db}: {text}"
            ),
            None => assert!(!text.contains("Stopped:"), "{db}: {text}"),
        }
        assert_eq!(bytes(&db_path), before, "{db} is unchanged");
    }
    // A fork of a smol-wf run names its steps as smol-wf did: all of them replay.
    let db = cli
        .path("smolwf-0.3.4-c-child-sleep-completed.db")
        .display()
        .to_string();
    let list = cli.json(&["--db", &db, "history", "-o", "json"]);
    let run_id = list[0]["runID"].as_str().unwrap().to_owned();
    let mut args = vec!["--db", db.as_str(), "fork", run_id.as_str()];
    args.extend(map);
    let output = cli.run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let fork: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        fork["tokenUsage"]["outputTokens"],
        json!(0),
        "nothing ran again"
    );
    assert!(!stderr(&output).contains("warning:"), "{}", stderr(&output));
}
