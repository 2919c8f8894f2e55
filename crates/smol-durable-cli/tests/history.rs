//! `smol-durable history`, driven through the real binary: smol-wf 0.3.4's list table, JSON
//! list, detail table and JSON, filters, option errors and `history delete` texts.
//! (Long, but one list of cases.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::path::Path;

use serde_json::{json, Value};
use smol_durable_core::store::{ClaimScope, NewRun, WorkflowInfo};
use smol_durable_core::DurableStore;
use smol_durable_sqlite::SqliteStore;
use support::Cli;

/// The test directory with the scripts the tests run.
fn cli() -> Cli {
    let cli = Cli::new();
    cli.write("demo.mjs", DEMO);
    cli.write("kid.mjs", KID);
    cli.write("thrower.mjs", THROWER);
    cli
}

/// A completed `demo` run, then a failed `thrower` run; their ids, newest first.
fn two_runs(cli: &Cli) -> (String, String) {
    cli.ok(&["run", "demo.mjs", "--args-who", "me"]);
    assert_eq!(cli.run(&["run", "thrower.mjs"]).status.code(), Some(1));
    let ids = cli.run_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    (ids[0].clone(), ids[1].clone())
}
const DEMO: &str = r#"import { sleep } from "workflow:extra";
export const meta = { name: 'demo', description: 'phases, a sleep and a child', phases: [{ title: 'Plan' }, { title: 'Build' }] };
phase('Plan');
const plan = await agent('make a plan');
await sleep(1);
phase('Build');
const child = await workflow({ scriptPath: './kid.mjs' }, { item: 'a' });
const built = await agent('build it', { model: 'openai/gpt-5' });
export default { plan, child, built };
"#;

const KID: &str = "export const meta = { name: 'kid', description: 'a child' };
phase('KidPhase');
const k = await agent('kid does ' + args.item);
export default { k };
";

const THROWER: &str = "export const meta = { name: 'thrower', description: 'fails' };
const first = await agent('x');
throw new Error('boom');
export default first;
";

/// Humanised times (`12s ago`, `1m ago`) as `0s ago` padded to the same length, so tables
/// compare exactly whatever the clock did between the run and the listing.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let preceded_by_word = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let digits = rest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(rest.len(), |end| start + end);
        let unit = ["mo ago", "s ago", "m ago", "h ago", "d ago", "y ago"]
            .into_iter()
            .find(|unit| rest[digits..].starts_with(unit));
        match unit {
            Some(unit) if !preceded_by_word => {
                let length = digits + unit.len() - start;
                out.push_str(&rest[..start]);
                out.push_str(&format!("{:<length$}", "0s ago"));
                rest = &rest[digits + unit.len()..];
            }
            _ => {
                out.push_str(&rest[..digits]);
                rest = &rest[digits..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` as Unix epoch milliseconds.
fn epoch_ms(iso: &str) -> i64 {
    let number = |range: std::ops::Range<usize>| -> i64 { iso[range].parse().expect("digits") };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    seconds * 1000 + number(20..23)
}

/// The keys of `object` in the order `text` prints them, looking from `anchor` on (each key's
/// first occurrence after it must be the object's own).
fn keys_in_order(object: &Value, text: &str, anchor: &str) -> Vec<String> {
    let from = text.find(anchor).expect("anchor printed");
    let mut keys: Vec<(usize, String)> = object
        .as_object()
        .expect("object")
        .keys()
        .map(|key| {
            let quoted = format!("\"{key}\": ");
            let at = text[from..].find(&quoted).expect("key printed");
            (at, key.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}

#[test]
fn list_table_aligns_columns_with_two_spaces_after_each() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    assert_eq!(
        cli.ok(&["history", "--name", "zzz"]),
        "RUN ID  STATE  WORKFLOW  CREATED  ATTEMPTS  STEPS  TOTAL TOKENS  \n",
        "an empty list prints only the header"
    );
    let table = normalize(&cli.ok(&["history"]));
    let expected = [
        "RUN ID                          STATE      WORKFLOW  CREATED  ATTEMPTS  STEPS  TOTAL TOKENS  ".to_owned(),
        format!("{thrower}  failed     thrower   0s ago   1         1      4             "),
        format!("{demo}  completed  demo      0s ago   1         5      22            "),
    ];
    assert_eq!(table.lines().collect::<Vec<_>>(), expected, "{table}");
}

#[test]
fn list_json_has_smol_wf_fields_in_order() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    assert_eq!(cli.ok(&["history", "-o", "json", "--name", "zzz"]), "[]\n");
    let text = cli.ok(&["history", "--output", "json"]);
    let list: Value = serde_json::from_str(&text).expect("JSON");
    let first = &list[0];
    assert_eq!(
        keys_in_order(&list[0], &text, "["),
        [
            "runID",
            "taskId",
            "rootRunId",
            "state",
            "metadata",
            "scriptPath",
            "createdAt",
            "updatedAt",
            "attempts",
            "completedSteps",
            "failedSteps",
            "totalTokens"
        ]
    );
    assert_eq!(first["runID"], json!(thrower));
    assert_eq!(first["rootRunId"], json!(thrower));
    assert!(first["taskId"].as_str().unwrap().starts_with("task_"));
    assert_eq!(first["state"], json!("failed"));
    assert_eq!(
        first["metadata"],
        json!({"description": "fails", "name": "thrower"})
    );
    assert_eq!(first["scriptPath"], json!("thrower.mjs"));
    assert_eq!(
        (
            &first["attempts"],
            &first["completedSteps"],
            &first["failedSteps"],
            &first["totalTokens"]
        ),
        (&json!(1), &json!(1), &json!(0), &json!(4))
    );
    let created = first["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), 24, "{created}");
    assert!(
        created.ends_with('Z') && created.as_bytes()[10] == b'T' && created.as_bytes()[19] == b'.'
    );
    assert!(epoch_ms(first["updatedAt"].as_str().unwrap()) >= epoch_ms(created));

    let second = &list[1];
    assert_eq!(second["runID"], json!(demo));
    assert_eq!(second["state"], json!("completed"));
    assert_eq!(second["scriptPath"], json!("demo.mjs"));
    assert_eq!(
        second["metadata"]["phases"],
        json!([{"title": "Plan"}, {"title": "Build"}])
    );
    // Two agents, a sleep and a child workflow of the root, the child's agent.
    assert_eq!(second["completedSteps"], json!(5));
    assert_eq!(second["totalTokens"], json!(22));
    assert!(second.get("ownerGone").is_none());
    // Metadata keys sorted, as serde_json prints any stored value.
    assert!(text.find("\"description\"") < text.find("\"name\""));
}

#[test]
fn detail_table_shows_token_usage_attempts_and_child_steps() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    let detail = normalize(&cli.ok(&["history", &demo]));
    let expected = format!(
        "Run:       {demo}
State:     completed
Workflow:  demo
Script:    demo.mjs
Created:   0s ago
Attempts:  1
Steps:     5 completed, 0 failed

Token Usage

PHASE     INPUT  CACHE READ  OUTPUT  TOTAL  
Build     2      0           4       6      
KidPhase  3      0           5       8      
Plan      3      0           5       8      

Attempts

ATTEMPT  STATE      STARTED  COMPLETED  
1        completed  0s ago   0s ago     

Steps

#  KIND      STATE      PHASE     PROVIDER  MODEL         ATTEMPTS  INPUT  CACHE READ  OUTPUT  TOTAL  SESSION  
1  agent     completed  Plan      debug     -             1         3      0           5       8      -        
2  sleep     completed  -         -         -             1         0      0           0       0      -        
3  workflow  completed  -         -         -             1         0      0           0       0      -        
-  agent     completed  KidPhase  debug     -             1         3      0           5       8      -        
4  agent     completed  Build     debug     openai/gpt-5  1         2      0           4       6      -        
"
    );
    assert_eq!(detail, expected);

    // Unphased tokens are `(none)`, after the phases (none here).
    let failed = normalize(&cli.ok(&["history", &thrower]));
    let expected = format!(
        "Run:       {thrower}
State:     failed
Workflow:  thrower
Script:    thrower.mjs
Created:   0s ago
Attempts:  1
Steps:     1 completed, 0 failed

Token Usage

PHASE   INPUT  CACHE READ  OUTPUT  TOTAL  
(none)  1      0           3       4      

Attempts

ATTEMPT  STATE   STARTED  COMPLETED  
1        failed  0s ago   0s ago     

Steps

#  KIND   STATE      PHASE  PROVIDER  MODEL  ATTEMPTS  INPUT  CACHE READ  OUTPUT  TOTAL  SESSION  
1  agent  completed  -      debug     -      1         1      0           3       4      -        
"
    );
    assert_eq!(failed, expected);
}

#[test]
fn detail_json_has_run_results_tokens_attempts_and_steps() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    let text = cli.ok(&["history", &demo, "-o", "json"]);
    let detail: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        keys_in_order(&detail, &text, "{"),
        ["workflowRun", "results", "tokenUsage", "attempts", "steps"]
    );
    let run = &detail["workflowRun"];
    assert_eq!(
        keys_in_order(&detail["workflowRun"], &text, "\"workflowRun\""),
        [
            "runID",
            "taskId",
            "workerId",
            "rootRunId",
            "state",
            "metadata",
            "scriptPath",
            "args",
            "createdAt",
            "updatedAt"
        ],
        "no failureReason on a run that never failed"
    );
    assert_eq!(run["runID"], json!(demo));
    assert_eq!(run["args"], json!({"who": "me"}));
    assert_eq!(run["state"], json!("completed"));
    assert_eq!(
        detail["results"],
        json!({"built": "echo: build it", "child": {"k": "echo: kid does a"}, "plan": "echo: make a plan"})
    );
    let usage = |input: u64, output: u64, total: u64| json!({"inputTokens": input, "cacheReadTokens": 0, "outputTokens": output, "cacheWriteTokens": 0, "totalTokens": total});
    let mut expected_usage = usage(8, 14, 22);
    expected_usage["byPhase"] = json!({
        "Build": usage(2, 4, 6),
        "KidPhase": usage(3, 5, 8),
        "Plan": usage(3, 5, 8),
    });
    assert_eq!(detail["tokenUsage"], expected_usage);
    let token_text = &text[text.find("\"tokenUsage\"").unwrap()..];
    assert!(
        token_text.find("inputTokens") < token_text.find("cacheReadTokens")
            && token_text.find("cacheReadTokens") < token_text.find("outputTokens")
            && token_text.find("cacheWriteTokens") < token_text.find("totalTokens"),
        "smol-wf's field order"
    );

    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        keys_in_order(&detail["attempts"][0], &text, "\"attempts\": ["),
        [
            "attemptId",
            "attempt",
            "state",
            "workerId",
            "startedAt",
            "completedAt",
            "failureReason"
        ]
    );
    assert_eq!(attempts[0]["attempt"], json!(1));
    assert_eq!(attempts[0]["failureReason"], Value::Null);
    assert!(attempts[0]["completedAt"].is_string());
    assert_eq!(run["workerId"], attempts[0]["workerId"]);
    assert!(run["workerId"].as_str().unwrap().starts_with("owner_"));

    let steps = detail["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps
        .iter()
        .map(|step| step["stepKind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["agent", "sleep", "workflow", "agent", "agent"]);
    assert_eq!(
        keys_in_order(&detail["steps"][0], &text, "\"steps\": ["),
        [
            "stepId",
            "stepKind",
            "checkpointName",
            "state",
            "attempts",
            "createdAt",
            "updatedAt",
            "agent",
            "tokenUsage",
            "number"
        ]
    );
    assert_eq!(
        steps[0]["agent"],
        json!({"provider": "debug", "model": null, "phase": "Plan", "sessionId": null})
    );
    assert_eq!(steps[0]["tokenUsage"], usage(3, 5, 8));
    assert!(steps[0]["checkpointName"]
        .as_str()
        .unwrap()
        .starts_with("step:sig_"));
    assert!(steps[1].get("agent").is_none(), "sleeps have no agent");
    assert_eq!(steps[1]["tokenUsage"], usage(0, 0, 0));
    assert!(steps[2].get("agent").is_none());
    assert_eq!(steps[3]["agent"]["phase"], json!("KidPhase"));
    assert_eq!(steps[4]["agent"]["model"], json!("openai/gpt-5"));
    assert_eq!(steps[4]["tokenUsage"], usage(2, 4, 6));

    let failed = cli.json(&["history", &thrower, "-o", "json"]);
    assert!(
        failed.get("results").is_none(),
        "results only when completed"
    );
    assert_eq!(failed["workflowRun"]["state"], json!("failed"));
    let reason = &failed["workflowRun"]["failureReason"]["message"];
    assert!(reason.as_str().unwrap().contains("boom"), "{reason}");
    assert_eq!(failed["attempts"][0]["failureReason"]["message"], *reason);
    assert_eq!(failed["tokenUsage"]["totalTokens"], json!(4));
    assert_eq!(
        failed["tokenUsage"]["byPhase"],
        json!({}),
        "unphased tokens stay out of byPhase"
    );
    assert_eq!(
        failed["steps"][0]["agent"],
        json!({"provider": "debug", "model": null, "phase": null, "sessionId": null})
    );
}

#[test]
fn filters_by_states_name_creation_time_and_limit() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["history", "-o", "json"];
        all.extend_from_slice(args);
        cli.json(&all)
            .as_array()
            .expect("array")
            .iter()
            .map(|run| run["runID"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--state", "failed"]), [thrower.as_str()]);
    assert_eq!(ids(&["--state", "completed"]), [demo.as_str()]);
    // Repeated states add up (smol-wf kept only the last one).
    assert_eq!(
        ids(&["--state", "completed", "--state", "failed"]),
        [thrower.as_str(), demo.as_str()]
    );
    assert_eq!(ids(&["--state", "cancelled"]), Vec::<String>::new());
    assert_eq!(ids(&["--name", "DEMO"]), [demo.as_str()]);
    assert_eq!(ids(&["--name", "ThRo"]), [thrower.as_str()]);
    assert_eq!(ids(&["--name", ""]), [thrower.as_str(), demo.as_str()]);
    assert_eq!(ids(&["--name", "zzz"]), Vec::<String>::new());
    assert_eq!(ids(&["--state=failed", "--name=thr"]), [thrower.as_str()]);
    assert_eq!(ids(&["--limit", "1"]), [thrower.as_str()]);
    assert_eq!(ids(&["--limit", "2"]), [thrower.as_str(), demo.as_str()]);

    let list = cli.json(&["history", "-o", "json"]);
    let newer = epoch_ms(list[0]["createdAt"].as_str().unwrap()).to_string();
    let older = epoch_ms(list[1]["createdAt"].as_str().unwrap()).to_string();
    assert_ne!(newer, older);
    // Both bounds are inclusive.
    assert_eq!(ids(&["--since", &newer]), [thrower.as_str()]);
    assert_eq!(ids(&["--until", &older]), [demo.as_str()]);
    assert_eq!(
        ids(&["--since", &older, "--until", &older]),
        [demo.as_str()]
    );
    assert_eq!(
        ids(&["--since", &older, "--until", &newer]),
        [thrower.as_str(), demo.as_str()]
    );
    assert_eq!(
        ids(&["--since", &newer, "--until", &older]),
        Vec::<String>::new()
    );
    let table = cli.ok(&[
        "history",
        "--state",
        "failed",
        "--state",
        "completed",
        "--limit",
        "1",
    ]);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&format!("{thrower}  failed  ")));
    let empty = cli.ok(&["history", "--since", &newer, "--until", &older]);
    assert_eq!(
        empty,
        "RUN ID  STATE  WORKFLOW  CREATED  ATTEMPTS  STEPS  TOTAL TOKENS  \n"
    );
}

#[test]
fn bad_options_print_smol_wf_messages() {
    let cli = cli();
    two_runs(&cli);
    for (args, message) in [
        (vec!["--limit", "0"], "--limit must be greater than zero"),
        (
            vec!["--limit", "abc"],
            "--limit must be a non-negative integer",
        ),
        (
            vec!["--limit", "-1"],
            "--limit must be a non-negative integer",
        ),
        (
            vec!["--limit=1.5"],
            "--limit must be a non-negative integer",
        ),
        (
            vec!["--since", "abc"],
            "--since must be an integer Unix epoch millisecond timestamp",
        ),
        (
            vec!["--since", "2026-12-03"],
            "--since must be an integer Unix epoch millisecond timestamp",
        ),
        (
            vec!["--until", "1.5"],
            "--until must be an integer Unix epoch millisecond timestamp",
        ),
        (
            vec!["--until", "99999999999999999999"],
            "--until must be an integer Unix epoch millisecond timestamp",
        ),
        (
            vec!["--state", "bogus"],
            "--state must be one of pending, running, completed, failed, cancelled",
        ),
        (
            vec!["--state", "Failed"],
            "--state must be one of pending, running, completed, failed, cancelled",
        ),
        (vec!["-o", "yaml"], "--output must be one of table, json"),
        (vec!["run_a", "run_b"], "history accepts at most one run id"),
    ] {
        let mut all = vec!["history"];
        all.extend_from_slice(&args);
        assert_eq!(cli.fails(&all), format!("error: {message}\n"), "{args:?}");
    }
    let missing = cli.fails(&["history", "run_nope"]);
    let db = cli.db().display().to_string();
    assert_eq!(
        missing,
        format!("error: workflow run run_nope was not found in {db}; check --db\n")
    );
}

#[test]
fn delete_prints_plan_counts_and_summary() {
    let cli = cli();
    let (thrower, demo) = two_runs(&cli);
    let created = |id: &str| -> String {
        cli.json(&["history", id, "-o", "json"])["workflowRun"]["createdAt"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (thrower_at, demo_at) = (created(&thrower), created(&demo));
    let count_lines = |text: String| text.lines().count();
    let demo_events = count_lines(cli.ok(&["events", &demo]));
    assert!(demo_events > 0);

    assert_eq!(
        cli.ok(&["history", "delete", "--state", "failed", "--dry-run"]),
        format!(
            "history delete (dry run) \u{2014} runs in state: failed
  failed       1
  created between {thrower_at} and {thrower_at}

Dry run: no rows were deleted.
Re-run without --dry-run to delete 1 run(s).
"
        )
    );
    assert_eq!(
        cli.ok(&["history", "delete", "--all", "--dry-run", "--dry-run"]),
        format!(
            "history delete (dry run) \u{2014} all runs
  completed    1
  failed       1
  created between {demo_at} and {thrower_at}

Dry run: no rows were deleted.
Re-run without --dry-run to delete 2 run(s).
"
        )
    );
    // Only finished runs are ever deleted.
    for state in ["running", "pending"] {
        assert_eq!(
            cli.ok(&["history", "delete", "--state", state]),
            format!(
                "history delete \u{2014} runs in state: {state}

No runs matched; nothing to delete.
"
            )
        );
    }
    assert_eq!(
        cli.json(&["history", "-o", "json"])
            .as_array()
            .map(Vec::len),
        Some(2),
        "nothing deleted yet"
    );

    // The root's steps and its child's, the task's attempts, ledger rows and events.
    assert_eq!(
        cli.ok(&[
            "history",
            "delete",
            "--state",
            "completed",
            "--state",
            "cancelled",
            "--state",
            "completed"
        ]),
        format!(
            "history delete \u{2014} runs in state: completed, cancelled, completed
  completed    1
  created between {demo_at} and {demo_at}

Deleted 1 run(s).
  steps: 5, attempts: 1, events: {demo_events}, budget entries: 3, tasks: 1
"
        )
    );
    assert!(cli.fails(&["history", &demo]).contains("was not found"));
    assert_eq!(
        cli.ok(&["history", "delete", "--state", "completed"]),
        "history delete \u{2014} runs in state: completed\n\nNo runs matched; nothing to delete.\n"
    );
    let thrower_events = count_lines(cli.ok(&["events", &thrower]));
    assert_eq!(
        cli.ok(&["history", "--state", "failed", "delete"]),
        format!(
            "history delete \u{2014} runs in state: failed
  failed       1
  created between {thrower_at} and {thrower_at}

Deleted 1 run(s).
  steps: 1, attempts: 1, events: {thrower_events}, budget entries: 1, tasks: 1
"
        )
    );
    assert_eq!(
        cli.ok(&["history"]),
        "RUN ID  STATE  WORKFLOW  CREATED  ATTEMPTS  STEPS  TOTAL TOKENS  \n"
    );
    assert_eq!(
        cli.ok(&["history", "delete", "--all"]),
        "history delete \u{2014} all runs\n\nNo runs matched; nothing to delete.\n"
    );
}

#[test]
fn delete_refuses_output_and_bad_choices() {
    let cli = cli();
    two_runs(&cli);
    for (args, message) in [
        (
            vec!["history", "delete", "--all", "-o", "json"],
            "history delete does not support --output; it uses fixed text output",
        ),
        (
            vec!["history", "-o", "json", "delete", "--all"],
            "history delete does not support --output; it uses fixed text output",
        ),
        (
            vec![
                "history", "--output", "table", "delete", "--state", "failed",
            ],
            "history delete does not support --output; it uses fixed text output",
        ),
        (
            vec!["history", "delete"],
            "history delete requires either --all or at least one --state <state>",
        ),
        (
            vec!["history", "delete", "--dry-run"],
            "history delete requires either --all or at least one --state <state>",
        ),
        (
            vec!["history", "delete", "--all", "--state", "failed"],
            "history delete: --all cannot be combined with --state",
        ),
        (
            vec!["history", "delete", "--state", "sleeping"],
            "--state must be one of pending, running, completed, failed, cancelled",
        ),
        (
            vec!["history", "--limit", "3", "delete", "--all"],
            "history delete does not support --limit",
        ),
    ] {
        assert_eq!(cli.fails(&args), format!("error: {message}\n"), "{args:?}");
    }
    assert_eq!(
        cli.json(&["history", "-o", "json"])
            .as_array()
            .map(Vec::len),
        Some(2),
        "nothing was deleted"
    );
}

/// Runs made straight in the store: created at chosen times, pending, with chosen names.
fn store_runs(db: &Path, runs: &[(&str, i64)]) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).expect("the database's directory");
    }
    runtime.block_on(async {
        let store = SqliteStore::open(db).await.expect("open");
        let mut ids = Vec::new();
        for (name, created_at) in runs {
            let mut workflow = WorkflowInfo::new();
            workflow.script_path = Some(format!("{name}.mjs"));
            workflow.metadata = Some(json!({ "name": name }));
            let new_run = NewRun::new(
                ClaimScope::Runner,
                "owner_test",
                workflow,
                json!({}),
                *created_at,
            );
            ids.push(store.create_run(new_run).await.expect("create").run.run_id);
        }
        ids
    })
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(since.as_millis()).expect("ms")
}

#[test]
fn ties_list_by_run_id_and_widths_follow_display_width() {
    let cli = cli();
    let now = now_ms();
    let day = 86_400_000;
    let same = now - 3 * day;
    let mut ids = store_runs(
        &cli.db(),
        &[
            ("tie-a", same),
            ("tie-b", same),
            ("tie-c", same),
            ("日本-x", now - 340 * day),
        ],
    );
    let old = ids.pop().unwrap();
    let names: std::collections::HashMap<String, &str> = ids
        .iter()
        .cloned()
        .zip(["tie-a", "tie-b", "tie-c"])
        .collect();
    let mut ties = ids.clone();
    ties.sort();
    let table = cli.ok(&["history"]);
    let mut expected = vec![
        "RUN ID                          STATE    WORKFLOW  CREATED   ATTEMPTS  STEPS  TOTAL TOKENS  ".to_owned(),
    ];
    for id in &ties {
        expected.push(format!(
            "{id}  pending  {}     3d ago    0         0      0             ",
            names[id]
        ));
    }
    // Display width 6 (two wide characters), so four spaces fill the column of width 8.
    expected.push(format!(
        "{old}  pending  日本-x    11mo ago  0         0      0             "
    ));
    assert_eq!(table.lines().collect::<Vec<_>>(), expected, "{table}");
    // The limit cuts where run-id order puts it, not where the store's order would.
    let limited = cli.json(&["history", "-o", "json", "--limit", "2"]);
    let limited: Vec<&str> = limited
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["runID"].as_str().unwrap())
        .collect();
    assert_eq!(limited, [ties[0].as_str(), ties[1].as_str()]);
}

/// A copy of one of the smol-wf 0.3.4 compatibility databases (never the checked-in file).
fn smol_wf_copy(cli: &Cli, name: &str) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat/dbs")
        .join(name);
    let copy = cli.dir().join(name);
    std::fs::copy(&source, &copy).expect("copy the database");
    copy.display().to_string()
}

/// The cells of a table's rows, split at the header's column starts.
fn cells(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    assert!(header.ends_with("  "), "{header:?}");
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for index in 2..bytes.len() {
        if bytes[index] != b' ' && bytes[index - 1] == b' ' && bytes[index - 2] == b' ' {
            starts.push(index);
        }
    }
    std::iter::once(header)
        .chain(lines)
        .map(|line| {
            assert!(line.ends_with("  "), "{line:?}");
            starts
                .iter()
                .enumerate()
                .map(|(column, start)| {
                    let end = starts.get(column + 1).copied().unwrap_or(line.len());
                    line[*start..end].trim_end().to_owned()
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_smol_wf_database_shows_its_run_with_child_steps_and_tokens() {
    let cli = cli();
    let db = smol_wf_copy(&cli, "smolwf-0.3.4-c-child-sleep-completed.db");
    let run_id = "run_01m8xn7ke79fyd723cwqnm87n6";
    let list = cli.ok(&["--db", &db, "history"]);
    let rows = cells(&list);
    assert_eq!(
        rows[0],
        [
            "RUN ID",
            "STATE",
            "WORKFLOW",
            "CREATED",
            "ATTEMPTS",
            "STEPS",
            "TOTAL TOKENS"
        ]
    );
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[1][..3], [run_id, "completed", "compat-parent"]);
    assert!(rows[1][3].ends_with(" ago"), "{list}");
    assert_eq!(rows[1][4..], ["1", "4", "30"]);

    let json = cli.json(&["--db", &db, "history", "-o", "json"]);
    assert_eq!(json[0]["createdAt"], json!("2026-12-03T09:54:37.639Z"));
    assert_eq!(json[0]["completedSteps"], json!(4));
    assert_eq!(json[0]["totalTokens"], json!(30));
    assert_eq!(json[0]["scriptPath"], json!("smolwf_c_parent.mjs"));

    let detail = cli.ok(&["--db", &db, "history", run_id]);
    assert!(
        detail.starts_with(&format!(
            "Run:       {run_id}\nState:     completed\nWorkflow:  compat-parent\nScript:    smolwf_c_parent.mjs\nCreated:   "
        )),
        "{detail}"
    );
    assert!(detail.contains("\nAttempts:  1\nSteps:     4 completed, 0 failed\n\nToken Usage\n\n"));
    let sections: Vec<&str> = detail.split("\n\n").collect();
    assert_eq!(
        sections[2],
        "PHASE  INPUT  CACHE READ  OUTPUT  TOTAL  \nChild  5      0           7       12     \nGo     7      0           11      18     "
    );
    let steps = cells(sections[6]);
    let columns: Vec<Vec<&str>> = steps
        .iter()
        .map(|row| {
            vec![
                row[0].as_str(),
                row[1].as_str(),
                row[2].as_str(),
                row[3].as_str(),
                row[4].as_str(),
                row[10].as_str(),
            ]
        })
        .collect();
    // smol-wf ran children inline: their steps are the root run's, numbered with it.
    assert_eq!(
        columns,
        [
            ["#", "KIND", "STATE", "PHASE", "PROVIDER", "TOTAL"],
            ["1", "agent", "completed", "Go", "debug", "10"],
            ["2", "agent", "completed", "Child", "debug", "12"],
            ["3", "sleep", "completed", "-", "-", "0"],
            ["4", "agent", "completed", "Go", "debug", "8"],
        ]
    );

    let detail = cli.json(&["--db", &db, "history", run_id, "-o", "json"]);
    let usage = &detail["tokenUsage"];
    assert_eq!(
        (
            &usage["inputTokens"],
            &usage["outputTokens"],
            &usage["totalTokens"]
        ),
        (&json!(12), &json!(18), &json!(30))
    );
    let phases: Vec<&String> = usage["byPhase"].as_object().unwrap().keys().collect();
    assert_eq!(phases, ["Child", "Go"]);
    assert_eq!(usage["byPhase"]["Go"]["totalTokens"], json!(18));
    assert_eq!(detail["steps"].as_array().map(Vec::len), Some(4));
    assert_eq!(detail["attempts"][0]["state"], json!("completed"));
    assert!(detail["workflowRun"]["workerId"]
        .as_str()
        .unwrap()
        .starts_with("owner_"));
}

#[test]
fn a_run_whose_owner_is_gone_says_so() {
    let cli = cli();
    // smol-wf was killed during a sleep: the run stays `running`, its lease long expired.
    let db = smol_wf_copy(&cli, "smolwf-0.3.4-b-killed-in-sleep.db");
    let run_id = "run_01m8xn7hzb296mg9xky3avrgbm";
    let rows = cells(&cli.ok(&["--db", &db, "history"]));
    assert_eq!(rows[1][..2], [run_id, "running (owner gone; resume it)"]);
    assert_eq!(rows[1][4..], ["1", "2", "16"]);
    let list = cli.json(&["--db", &db, "history", "-o", "json", "--state", "running"]);
    assert_eq!(list[0]["state"], json!("running"));
    assert_eq!(list[0]["ownerGone"], json!(true));
    let detail = cli.ok(&["--db", &db, "history", run_id]);
    assert!(
        detail.contains("\nState:     running (owner gone; resume it)\n"),
        "{detail}"
    );
    let sections: Vec<&str> = detail.split("\n\n").collect();
    let steps = cells(sections[6]);
    assert_eq!(steps[3][..4], ["3", "sleep", "running", "-"]);
    let attempts = cells(sections[4]);
    assert_eq!(attempts[1][..2], ["1", "running"]);
    assert_eq!(attempts[1][3], "-", "not completed");
    let json = cli.json(&["--db", &db, "history", run_id, "-o", "json"]);
    assert_eq!(json["workflowRun"]["state"], json!("running"));
    assert_eq!(json["workflowRun"]["ownerGone"], json!(true));
    assert!(json.get("results").is_none());
    assert_eq!(json["attempts"][0]["completedAt"], Value::Null);
    // An unfinished run is never deleted.
    assert_eq!(
        cli.ok(&["--db", &db, "history", "delete", "--state", "running", "--dry-run"]),
        "history delete (dry run) \u{2014} runs in state: running\n\nNo runs matched; nothing to delete.\n"
    );
    assert_eq!(
        cli.ok(&["--db", &db, "history", "delete", "--all"]),
        "history delete \u{2014} all runs\n\nNo runs matched; nothing to delete.\n"
    );
}
