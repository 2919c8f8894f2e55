//! Differential compatibility with smol-wf 0.3.4: every case of `tests/compat/cases.json` runs
//! through this binary, and its exit codes, results, `tokenUsage`, `[phase]`/`[log]` lines,
//! error lines, event stream and stored step signatures are compared with the goldens that the
//! released smol-wf 0.3.4 wrote itself (`tests/compat/regenerate.sh`; the tests never run it).
//!
//! Every difference is deliberate: [`DIFFERENCES`] names it per case, and
//! `docs/compatibility.md` explains each one (a test below checks the document names every
//! case listed here).
//! (Long, but one list of cases.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

/// The corpus directory: scripts are run from here, with paths relative to it.
const COMPAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat");

/// Where the goldens were written: it appears in smol-wf's messages and in the `cwd` of the
/// stored signatures, and is replaced by this checkout's corpus directory before comparing.
const GOLDEN_DIR: &str = "/work/main/crates/smol-durable-cli/tests/compat";

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    script: String,
    args: Vec<String>,
    note: String,
}

/// What smol-durable deliberately does differently in a case.
#[derive(Debug, Clone, Copy)]
enum Difference {
    /// The budget is enforced (SPEC §7): a call with nothing left fails the run with `budget
    /// exhausted`, where smol-wf let it overspend. Only what happened before is compared.
    BudgetEnforced,
    /// The values of these result keys differ (messages in smol-durable's words, better values
    /// from the debug provider); every other key is compared.
    ResultKeys(&'static [&'static str]),
    /// `tokenUsage` differs (failed tries and rejected answers are billed, SPEC defect 10; or
    /// calls differ as listed), and with it the agent outcome events of the root run.
    TokenUsage,
    /// Calls smol-wf made steps of (and reported as started and failed) that smol-durable
    /// refuses before they are steps: an invalid `schema`, an unknown provider. Identified by
    /// their prompts; their error is the same.
    RefusedCalls(&'static [&'static str]),
    /// Calls smol-wf refused that smol-durable makes: a prompt with a lone surrogate reaches
    /// the provider with U+FFFD in its place. Identified by their prompts.
    ExtraCalls(&'static [&'static str]),
    /// Calls with a `key` option are named by the key alone (editing their prompt replays
    /// them): their step signatures differ, the rest does not.
    KeyedCalls,
    /// Branches run concurrently: events are compared as a multiset (and each step's events in
    /// order), not in one global order, which is not part of the contract.
    Concurrent,
    /// The run's error (the `error:` line and `workflow.error`) is smol-durable's own message,
    /// which contains this text.
    ErrorMessage(&'static str),
    /// smol-durable refuses before any run starts (nothing is written, no event), with an
    /// error containing this text; smol-wf started the run first.
    RefusedBeforeRun(&'static str),
    /// Child workflows are runs of their own with steps of their own (SPEC defect 8): the
    /// root's step rows differ.
    ChildRuns,
}

use Difference::*;

/// The deliberate differences, by case (explained in docs/compatibility.md).
const DIFFERENCES: &[(&str, &[Difference])] = &[
    (
        "06_schema_rejected_values",
        &[
            ResultKeys(&[
                "itemsFalse",
                "maximumBelowZero",
                "minItems",
                "minLength",
                "multipleOf",
            ]),
            TokenUsage,
            RefusedCalls(&[
                "Generate unknownTypeName",
                "Generate requiredDuplicates",
                "Generate itemsAsArray",
            ]),
        ],
    ),
    (
        "17_provider_validation",
        &[RefusedCalls(&[
            "provider unknownProvider",
            "provider unknownProviderWithModel",
        ])],
    ),
    ("19_parallel", &[Concurrent]),
    ("20_parallel_max_agents", &[Concurrent]),
    ("21_pipeline", &[Concurrent]),
    ("24_budget_zero", &[BudgetEnforced]),
    ("25_budget_exhausted", &[BudgetEnforced]),
    ("26_sleep", &[Concurrent]),
    ("28_child_workflow", &[ChildRuns]),
    (
        "29_child_workflow_errors",
        &[ChildRuns, ResultKeys(&["badRef", "numberRef", "thrown"])],
    ),
    ("30_named_workflow", &[ChildRuns]),
    // `ctx` and `workflow:extra` also offer the waits API (`waitFor`, `waitForAny`, `signal`,
    // `runId`), which smol-wf lacked.
    (
        "31_function_default_ctx",
        &[Concurrent, ResultKeys(&["extraKeys", "keys"])],
    ),
    (
        "37_args_file_not_object",
        &[ErrorMessage("--args-from-file must contain a JSON or YAML object")],
    ),
    (
        "39_syntax_error",
        &[ErrorMessage(
            "SyntaxError: expected token 'property name', got ';' in property name (at scripts/39_syntax_error.mjs:4:18)",
        )],
    ),
    (
        "42_unicode",
        &[
            ResultKeys(&["loneHigh", "loneLow"]),
            TokenUsage,
            ExtraCalls(&["lone \u{FFFD} surrogate", "low \u{FFFD} end"]),
        ],
    ),
    ("44_agent_option_keys", &[KeyedCalls]),
    ("46_result_conversion", &[ResultKeys(&["date"])]),
    (
        "47_sandbox_globals",
        &[
            Concurrent,
            ResultKeys(&[
                "Date",
                "Function",
                "eval",
                "assign_agent",
                "assign_args",
                "assign_budget",
                "random",
            ]),
        ],
    ),
    (
        "48_missing_default_export",
        &[RefusedBeforeRun("workflow has no default export")],
    ),
    (
        "49_invalid_meta",
        &[RefusedBeforeRun("workflow metadata must be a literal object")],
    ),
    (
        "53_unknown_import",
        &[ErrorMessage("import of \"node:fs\" is not allowed in workflows")],
    ),
    (
        "56_agent_provider_bare",
        &[ErrorMessage("a value is required for '--agent-provider <NAME>'")],
    ),
];

fn differences(case: &str) -> &'static [Difference] {
    DIFFERENCES
        .iter()
        .find(|(name, _)| *name == case)
        .map_or(&[], |(_, differences)| differences)
}

fn has(case: &str, wanted: fn(&Difference) -> bool) -> bool {
    differences(case).iter().any(wanted)
}

/// What smol-wf 0.3.4 wrote for a case.
struct Golden {
    stdout: String,
    stderr: String,
    exit_code: i32,
    events: Vec<Value>,
    events_exit_code: i32,
    steps: Vec<Value>,
}

impl Golden {
    fn read(name: &str) -> Self {
        let dir = Path::new(COMPAT).join("golden").join(name);
        let text = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("golden {name}/{file}: {e}"))
                .replace(GOLDEN_DIR, COMPAT)
        };
        let lines = |file: &str| -> Vec<Value> {
            text(file)
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect()
        };
        Self {
            stdout: text("stdout.txt"),
            stderr: text("stderr.txt"),
            exit_code: text("exit_code").trim().parse().expect("an exit code"),
            events: lines("events.jsonl"),
            events_exit_code: text("events_exit_code")
                .trim()
                .parse()
                .expect("an exit code"),
            steps: lines("steps.jsonl"),
        }
    }
}

/// One run of this binary on a case, in a fresh database.
struct Ran {
    output: Output,
    db: PathBuf,
}

impl Ran {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn exit_code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
}

fn run(case: &Case, events: bool, dir: &Path) -> Ran {
    let db = dir.join(if events { "events.db" } else { "plain.db" });
    let mut command = Command::new(env!("CARGO_BIN_EXE_smol-durable"));
    command
        .arg("--db")
        .arg(&db)
        .arg("run")
        .arg(&case.script)
        .args(&case.args)
        .current_dir(COMPAT)
        .env("XDG_STATE_HOME", dir)
        .env_remove("SMOL_DURABLE_DB");
    if events {
        command.arg("--events");
    }
    Ran {
        output: command.output().expect("the binary runs"),
        db,
    }
}

/// The `[phase]` and `[log]` lines of a stderr.
fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("[phase] ") || line.starts_with("[log] "))
        .collect()
}

/// The message of the first `error:` line (and the lines that follow it, up to the next
/// `hint:`/`note:` line), without the prefix.
fn error_message(stderr: &str) -> Option<String> {
    let start = stderr.find("error: ")?;
    let rest = &stderr[start + "error: ".len()..];
    let end = ["\nhint: ", "\nnote: "]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end().to_owned())
}

/// smol-wf's message without the wording it wrapped every script failure in (`workflow module
/// evaluation rejected: …` and a JavaScript stack): the part smol-durable must also say.
fn core_message(message: &str) -> &str {
    let message = [
        "workflow module evaluation rejected: ",
        "workflow module rejected: ",
    ]
    .iter()
    .find_map(|prefix| message.strip_prefix(prefix))
    .unwrap_or(message);
    message
        .split("\n    at ")
        .next()
        .unwrap_or(message)
        .trim_end()
}

/// An event with what differs between any two runs taken out: ids, times, attempts.
/// Event types smol-durable adds to smol-wf's stream.
const ADDED_EVENTS: [&str; 2] = ["workflow.agent_retrying", "workflow.sleep_started"];

fn normalized(event: &Value) -> Value {
    let mut event = event.clone();
    if let Some(object) = event.as_object_mut() {
        object.remove("elapsedNanos");
    }
    if let Some(metadata) = event.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "runId",
            "stepId",
            "parentStepId",
            "attemptId",
            "workflowRunId",
        ] {
            metadata.remove(key);
        }
    }
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        data.remove("startTime");
    }
    event
}

fn event_type(event: &Value) -> &str {
    event["type"].as_str().unwrap_or("")
}

/// Compares one case; returns what differs beyond its deliberate differences.
fn compare(case: &Case, dir: &Path) -> Vec<String> {
    let golden = Golden::read(&case.name);
    let plain = run(case, false, dir);
    let streamed = run(case, true, dir);
    let mut problems = Vec::new();
    let name = case.name.as_str();
    let budget = has(name, |d| matches!(d, BudgetEnforced));
    let refused = differences(name).iter().find_map(|d| match d {
        RefusedBeforeRun(text) => Some(*text),
        _ => None,
    });
    let own_error = differences(name).iter().find_map(|d| match d {
        ErrorMessage(text) => Some(*text),
        _ => None,
    });

    // Exit codes.
    let expected_exit = if budget || refused.is_some() {
        1
    } else {
        golden.exit_code
    };
    if plain.exit_code() != expected_exit {
        problems.push(format!(
            "exit code {} (smol-wf {}), stderr: {}",
            plain.exit_code(),
            golden.exit_code,
            plain.stderr()
        ));
    }
    let expected_events_exit = if budget || refused.is_some() {
        1
    } else {
        golden.events_exit_code
    };
    if streamed.exit_code() != expected_events_exit {
        problems.push(format!(
            "--events exit code {} (smol-wf {})",
            streamed.exit_code(),
            golden.events_exit_code
        ));
    }

    // Results and token usage.
    if let (false, Ok(want)) = (budget, serde_json::from_str::<Value>(&golden.stdout)) {
        match serde_json::from_str::<Value>(&plain.stdout()) {
            Err(error) => {
                problems.push(format!("stdout is not JSON ({error}): {}", plain.stdout()))
            }
            Ok(got) => {
                let skipped: &[&str] = differences(name)
                    .iter()
                    .find_map(|d| match d {
                        ResultKeys(keys) => Some(*keys),
                        _ => None,
                    })
                    .unwrap_or(&[]);
                let strip = |value: &Value| {
                    let mut value = value.clone();
                    if let Some(object) = value.as_object_mut() {
                        for key in skipped {
                            object.remove(*key);
                        }
                    }
                    value
                };
                if strip(&got["results"]) != strip(&want["results"]) {
                    problems.push(format!(
                        "results differ:\n  ours:   {}\n  smol-wf: {}",
                        strip(&got["results"]),
                        strip(&want["results"])
                    ));
                }
                if !has(name, |d| matches!(d, TokenUsage))
                    && got["tokenUsage"] != want["tokenUsage"]
                {
                    problems.push(format!(
                        "tokenUsage {} (smol-wf {})",
                        got["tokenUsage"], want["tokenUsage"]
                    ));
                }
                if !got["runID"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("run_"))
                {
                    problems.push(format!("no runID in {got}"));
                }
            }
        }
    }

    // `[phase]` and `[log]` lines: the same, or for an enforced budget the same up to where
    // the budget ran out.
    let (ours, theirs) = (plain.stderr(), golden.stderr.clone());
    let (ours_lines, theirs_lines) = (progress_lines(&ours), progress_lines(&theirs));
    let same_lines = if budget {
        theirs_lines.starts_with(&ours_lines)
    } else if refused.is_some() {
        ours_lines.is_empty()
    } else {
        ours_lines == theirs_lines
    };
    if !same_lines {
        problems.push(format!(
            "[phase]/[log] lines differ:\n  ours:   {ours_lines:?}\n  smol-wf: {theirs_lines:?}"
        ));
    }

    // The error line.
    let our_error = error_message(&ours);
    let wanted_error = if budget {
        Some("budget exhausted: spent".to_owned())
    } else if let Some(text) = refused.or(own_error) {
        Some(text.to_owned())
    } else {
        error_message(&theirs).map(|message| core_message(&message).to_owned())
    };
    match (&our_error, &wanted_error) {
        (None, None) => {}
        (Some(ours), Some(wanted)) if ours.contains(wanted.as_str()) => {}
        (ours, wanted) => problems.push(format!(
            "error line {ours:?} does not say {wanted:?} (smol-wf: {:?})",
            error_message(&theirs)
        )),
    }

    // The event stream.
    let stdout = streamed.stdout();
    let our_events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or(Value::String(line.to_owned())))
        .collect();
    problems.extend(compare_events(
        name,
        &our_events,
        &golden.events,
        wanted_error.as_deref(),
    ));

    // Step signatures: byte for byte, so a run smol-wf left behind replays.
    if !has(name, |d| {
        matches!(d, ChildRuns | BudgetEnforced | RefusedBeforeRun(_))
    }) {
        let prompts = |wanted: fn(&Difference) -> Option<&'static [&'static str]>| {
            differences(name)
                .iter()
                .filter_map(wanted)
                .flatten()
                .copied()
                .collect::<Vec<_>>()
        };
        let refused_calls = prompts(|d| match d {
            RefusedCalls(prompts) => Some(*prompts),
            _ => None,
        });
        let extra_calls = prompts(|d| match d {
            ExtraCalls(prompts) => Some(*prompts),
            _ => None,
        });
        let keyed = has(name, |d| matches!(d, KeyedCalls));
        let kept = |signature: &String, skipped: &[&str]| {
            let document: Value = serde_json::from_str(signature).unwrap_or(Value::Null);
            let is_keyed =
                document["signatureVersion"] == 3 || document["options"]["key"].is_string();
            !(skipped.iter().any(|prompt| document["prompt"] == *prompt) || keyed && is_keyed)
        };
        let mut ours = step_signatures(&plain.db);
        let mut theirs = golden_signatures(&golden.steps);
        let (ours_keyed, theirs_keyed) = (ours.len(), theirs.len());
        ours.retain(|signature| kept(signature, &extra_calls));
        theirs.retain(|signature| kept(signature, &refused_calls));
        if keyed && ours_keyed - ours.len() != theirs_keyed - theirs.len() {
            problems.push("not as many keyed steps as smol-wf's".to_owned());
        }
        if ours != theirs {
            let only = |these: &[String], those: &[String]| -> String {
                these
                    .iter()
                    .filter(|signature| !those.contains(signature))
                    .map(|signature| format!("\n      {signature}"))
                    .collect()
            };
            problems.push(format!(
                "step signatures differ:\n  only ours:{}\n  only smol-wf:{}",
                only(&ours, &theirs),
                only(&theirs, &ours)
            ));
        }
    }
    problems
}

/// Checks the event stream's shape (one root `workflow.started` first, one root result or
/// error last, never-decreasing `elapsedNanos`) and its content against smol-wf's.
fn compare_events(
    name: &str,
    ours: &[Value],
    theirs: &[Value],
    wanted_error: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(bad) = ours.iter().find(|event| !event.is_object()) {
        problems.push(format!("--events printed a line that is not JSON: {bad}"));
        return problems;
    }
    if let Some(text) = differences(name).iter().find_map(|d| match d {
        RefusedBeforeRun(text) => Some(*text),
        _ => None,
    }) {
        if !ours.is_empty() {
            problems.push(format!(
                "refused before the run ({text}), yet events: {ours:?}"
            ));
        }
        return problems;
    }
    if theirs.is_empty() {
        if !ours.is_empty() {
            problems.push(format!("smol-wf printed no events; ours: {ours:?}"));
        }
        return problems;
    }
    // Shape.
    let root = |event: &Value| event["metadata"]["workflowDepth"] == 0;
    match ours.first() {
        Some(first) if event_type(first) == "workflow.started" && root(first) => {
            if first.get("elapsedNanos").is_some() || first["data"]["startTime"].as_str().is_none()
            {
                problems.push(format!(
                    "the root workflow.started is not smol-wf's: {first}"
                ));
            }
        }
        first => problems.push(format!(
            "the stream does not open with workflow.started: {first:?}"
        )),
    }
    match ours.last() {
        Some(last)
            if matches!(event_type(last), "workflow.result" | "workflow.error") && root(last) => {}
        last => problems.push(format!(
            "the stream does not end with a root result or error: {last:?}"
        )),
    }
    let elapsed: Vec<u64> = ours
        .iter()
        .skip(1)
        .map(|event| event["elapsedNanos"].as_u64().unwrap_or(0))
        .collect();
    if elapsed.windows(2).any(|pair| pair[0] > pair[1]) {
        problems.push(format!("elapsedNanos decreases: {elapsed:?}"));
    }
    for event in ours {
        let metadata = &event["metadata"];
        if !metadata["runId"]
            .as_str()
            .is_some_and(|id| id.starts_with("run_"))
        {
            problems.push(format!("an event without the root runId: {event}"));
        }
    }
    // Content. The error event is checked like the error line; everything else as smol-wf
    // wrote it.
    // A child's error says at least what smol-wf's said (without its wording).
    let child_errors = |events: &[Value], core: bool| -> Vec<String> {
        events
            .iter()
            .filter(|event| event_type(event) == "workflow.error" && !root(event))
            .map(|event| {
                let message = event["data"]["message"].as_str().unwrap_or("");
                if core {
                    core_message(message).to_owned()
                } else {
                    message.to_owned()
                }
            })
            .collect()
    };
    let (ours_children, theirs_children) = (child_errors(ours, false), child_errors(theirs, true));
    if ours_children.len() != theirs_children.len()
        || ours_children
            .iter()
            .zip(&theirs_children)
            .any(|(ours, theirs)| !ours.contains(theirs.as_str()))
    {
        problems.push(format!(
            "child errors {ours_children:?} do not say {theirs_children:?}"
        ));
    }
    // smol-durable's own additions (documented in docs/compatibility.md) are not compared.
    let comparable = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .map(normalized)
            .filter(|event| event_type(event) != "workflow.error")
            .filter(|event| !ADDED_EVENTS.contains(&event_type(event)))
            .collect()
    };
    let prompts_of = |wanted: fn(&Difference) -> Option<&'static [&'static str]>| {
        differences(name)
            .iter()
            .filter_map(wanted)
            .flatten()
            .copied()
            .collect::<Vec<&str>>()
    };
    let refused_calls = prompts_of(|d| match d {
        RefusedCalls(prompts) => Some(*prompts),
        _ => None,
    });
    let extra_calls = prompts_of(|d| match d {
        ExtraCalls(prompts) => Some(*prompts),
        _ => None,
    });
    let mut ours_content = comparable(&without_calls(ours, &extra_calls));
    let mut theirs_content = comparable(&without_calls(theirs, &refused_calls));
    if has(name, |d| matches!(d, BudgetEnforced)) {
        // Up to the call the budget refused.
        theirs_content.truncate(ours_content.len());
    }
    if has(name, |d| matches!(d, TokenUsage | ResultKeys(_))) {
        // Results and agent outcomes of the calls that differ are compared above; the rest of
        // the stream must still be smol-wf's.
        let keep = |event: &Value| {
            !matches!(
                event_type(event),
                "workflow.result" | "workflow.agent_completed" | "workflow.agent_failed"
            ) || !root(event)
        };
        ours_content.retain(keep);
        theirs_content.retain(keep);
    }
    if has(name, |d| matches!(d, Concurrent)) {
        let key = |event: &Value| event.to_string();
        let mut sorted_ours: Vec<String> = ours_content.iter().map(key).collect();
        let mut sorted_theirs: Vec<String> = theirs_content.iter().map(key).collect();
        sorted_ours.sort();
        sorted_theirs.sort();
        if sorted_ours != sorted_theirs {
            let only = |these: &[String], those: &[String]| -> String {
                these
                    .iter()
                    .filter(|event| !those.contains(event))
                    .take(4)
                    .map(|event| format!("\n      {event}"))
                    .collect()
            };
            problems.push(format!(
                "events differ (as a multiset):\n  only ours:{}\n  only smol-wf:{}",
                only(&sorted_ours, &sorted_theirs),
                only(&sorted_theirs, &sorted_ours)
            ));
        }
        // Each step's events in order: started before completed or failed.
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for event in ours {
            if ADDED_EVENTS.contains(&event_type(event)) {
                continue;
            }
            if let Some(step) = event["metadata"]["stepId"].as_str() {
                let kind = event_type(event);
                let previous = seen.insert(step.to_owned(), kind);
                let in_order = match kind {
                    "workflow.agent_started" => previous.is_none(),
                    _ => previous == Some("workflow.agent_started"),
                };
                if !in_order {
                    problems.push(format!("step {step}: {kind} after {previous:?}"));
                }
            }
        }
    } else if ours_content != theirs_content {
        let at = ours_content
            .iter()
            .zip(&theirs_content)
            .position(|(ours, theirs)| ours != theirs)
            .unwrap_or(ours_content.len().min(theirs_content.len()));
        let lines = |events: &[Value]| -> String {
            events
                .iter()
                .skip(at)
                .take(4)
                .map(|event| format!("\n      {event}"))
                .collect()
        };
        problems.push(format!(
            "events differ from event {at} on:\n  ours:{}\n  smol-wf:{}",
            lines(&ours_content),
            lines(&theirs_content)
        ));
    }
    // The error event says what the error line says.
    let ours_error = ours
        .iter()
        .find(|event| event_type(event) == "workflow.error" && root(event));
    let theirs_error = theirs
        .iter()
        .any(|event| event_type(event) == "workflow.error" && root(event));
    match (ours_error, wanted_error) {
        (None, None) if !theirs_error => {}
        (Some(event), Some(wanted))
            if event["data"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(wanted)) => {}
        (event, wanted) => {
            problems.push(format!("workflow.error {event:?} does not say {wanted:?}"))
        }
    }
    problems
}

/// The events without those of the agent calls whose prompts are listed (found by the step id
/// of their `workflow.agent_started`).
fn without_calls(events: &[Value], prompts: &[&str]) -> Vec<Value> {
    let steps: Vec<&str> = events
        .iter()
        .filter(|event| event_type(event) == "workflow.agent_started")
        .filter(|event| {
            prompts
                .iter()
                .any(|prompt| event["data"]["promptPreview"] == *prompt)
        })
        .filter_map(|event| event["metadata"]["stepId"].as_str())
        .collect();
    events
        .iter()
        .filter(|event| {
            !event["metadata"]["stepId"]
                .as_str()
                .is_some_and(|step| steps.contains(&step))
        })
        .cloned()
        .collect()
}

/// The canonical signatures of a database's steps, sorted.
fn step_signatures(db: &Path) -> Vec<String> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let Ok(connection) = rusqlite::Connection::open_with_flags(db, flags) else {
        return Vec::new(); // refused before the database was created
    };
    let Ok(mut statement) =
        connection.prepare("SELECT input_signature_json FROM sw_workflow_steps")
    else {
        return Vec::new();
    };
    let mut signatures: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .map(|row| row.expect("row"))
        .collect();
    signatures.sort();
    signatures
}

fn golden_signatures(steps: &[Value]) -> Vec<String> {
    let mut signatures: Vec<String> = steps
        .iter()
        .map(|step| {
            step["inputSignatureJson"]
                .as_str()
                .expect("a signature")
                .to_owned()
        })
        .collect();
    signatures.sort();
    signatures
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(Path::new(COMPAT).join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases")
}

#[test]
fn every_case_matches_smol_wf_or_differs_as_documented() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let dir = tempfile::tempdir().expect("dir");
    let mut report = String::new();
    for case in &cases {
        let case_dir = dir.path().join(&case.name);
        std::fs::create_dir_all(&case_dir).expect("dir");
        let problems = compare(case, &case_dir);
        if !problems.is_empty() {
            report.push_str(&format!("\n== {} ({})\n", case.name, case.note));
            for problem in problems {
                report.push_str(&format!("- {problem}\n"));
            }
        }
    }
    assert!(report.is_empty(), "differences from smol-wf 0.3.4:{report}");
}

#[test]
fn every_deliberate_difference_is_documented() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/compatibility.md"),
    )
    .expect("docs/compatibility.md");
    let cases: Vec<String> = cases().into_iter().map(|case| case.name).collect();
    for (name, _) in DIFFERENCES {
        assert!(
            cases.iter().any(|case| case == name),
            "{name} is not a case"
        );
        assert!(
            docs.contains(name),
            "docs/compatibility.md does not explain case {name}"
        );
    }
}

#[test]
fn error_messages_lose_only_smol_wf_s_wrapping() {
    assert_eq!(
        core_message("workflow module evaluation rejected: boom\n    at f (/x.mjs:1:2)\n"),
        "boom"
    );
    assert_eq!(core_message("workflow module rejected: typed"), "typed");
    assert_eq!(
        core_message("Unknown agent provider: x"),
        "Unknown agent provider: x"
    );
    assert_eq!(
        error_message("[log] a\nerror: it broke\n  here\nhint: resume\n").as_deref(),
        Some("it broke\n  here")
    );
}
