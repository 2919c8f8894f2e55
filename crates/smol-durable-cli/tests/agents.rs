//! The coding-agent providers through the engine and the binary, with the fake CLIs of
//! `smol-durable-agents` on `PATH`: runs, per-call providers, live events, kill -9 and resume,
//! cancellation, worktree isolation with real git, and the Anthropic API against a stub.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable_testkit::{StubHttpServer, StubResponse};
use support::{stderr, Cli};

/// The fakes' directory.
fn fakes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../smol-durable-agents/tests/fakes")
}

/// `PATH` with the fakes first.
fn fake_path() -> String {
    format!(
        "{}:{}",
        fakes().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A command of `cli` with the fakes on `PATH`, logging their calls to `log`.
fn with_fakes(cli: &Cli, args: &[&str], log: &Path) -> Command {
    let mut command = cli.command(args);
    command
        .env("PATH", fake_path())
        .env("FAKE_AGENT_LOG", log)
        .env("FAKE_AGENT_LINE_DELAY", "0.01");
    command
}

/// The calls the fakes logged (opencode's server start is not a call: its message is).
fn calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("log line"))
        .filter(|call| call["mode"] != "serve")
        .collect()
}

fn wait_for_calls(log: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls(log).len() < count {
        assert!(Instant::now() < deadline, "{count} calls never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` with its agents' tools sleeping 30 s, and kills it with `kill -9` once the
/// fakes logged `started` calls.
fn kill_9_once_called(mut command: Command, log: &Path, started: usize) {
    let mut run = command
        .env("FAKE_AGENT_SLEEP", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_for_calls(log, started);
    run.kill().expect("kill -9");
    run.wait().expect("reaped");
}

/// A workflow with one slow agent call in a worktree of its own.
const ONE_SLOW_ISOLATED: &str = r#"
export const meta = { name: "isolated", description: "one slow isolated agent" };
export default async function () { return agent("slow FAKE:slow", { isolation: "worktree" }); }
"#;

/// A workflow with one quick call of the default (`debug`) provider.
const PLAIN: &str = r#"
export const meta = { name: "plain", description: "x" };
export default async function () { return agent("hi"); }
"#;

/// Kills what a killed CLI left running: the fake of `call` and its tools.
fn kill_group(call: &Value) {
    let pgid = call["pgid"].as_i64().expect("pgid");
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn group_alive(call: &Value) -> bool {
    smol_durable_testkit::process_group_running(call["pgid"].as_u64().expect("pgid") as u32)
}

const TWO_CALLS: &str = r#"
export const meta = { name: "two-calls", description: "an answer and a structured answer" };
export default async function () {
  const text = await agent("hello there");
  const review = await agent("review\nFAKE_JSON: {\"verdict\": \"ship\"}", {
    schema: { type: "object", properties: { verdict: { type: "string" } }, required: ["verdict"] },
  });
  return { text, review };
}
"#;

#[test]
fn each_coding_agent_runs_a_workflow_and_its_usage_reaches_the_ledger() {
    for (provider, fake, session) in [
        ("claude-code", "claude", "fake-claude-session"),
        ("codex", "codex", "fake-codex-thread"),
        ("opencode", "opencode", "ses_fake_opencode"),
        ("pi", "pi", "fake-pi-session"),
    ] {
        let cli = Cli::new();
        let script = cli.write("flow.js", TWO_CALLS);
        let log = cli.path("calls.jsonl");
        let output = with_fakes(&cli, &["run", &script, "--agent-provider", provider], &log)
            .output()
            .expect("runs");
        assert!(output.status.success(), "{provider}: {}", stderr(&output));
        let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(
            printed["results"],
            json!({ "text": format!("fake {fake} answer: hello there"), "review": { "verdict": "ship" } }),
            "{provider}"
        );
        // smol-wf's shape: input, output, total (input + output + cache writes).
        assert_eq!(
            printed["tokenUsage"],
            json!({ "inputTokens": 22, "outputTokens": 14, "totalTokens": 46 }),
            "{provider}"
        );
        assert_eq!(calls(&log).len(), 2, "{provider}");
        let run_id = printed["runID"].as_str().unwrap();
        let detail = cli.json(&["history", run_id, "-o", "json"]);
        assert_eq!(detail["tokenUsage"]["cacheReadTokens"], 200, "{provider}");
        assert_eq!(detail["tokenUsage"]["cacheWriteTokens"], 10, "{provider}");
        for step in detail["steps"].as_array().unwrap() {
            assert_eq!(step["agent"]["provider"], provider);
            assert_eq!(step["agent"]["sessionId"], session);
            assert_eq!(step["tokenUsage"]["cacheReadTokens"], 100);
        }
        // Every line the CLI printed became an event, with its session and, for tool calls,
        // a summary of the action.
        let events = cli.events(run_id);
        let agent_events: Vec<&Value> = events
            .iter()
            .filter(|event| event["type"] == "workflow.agent_event")
            .collect();
        assert!(agent_events.len() >= 6, "{provider}: {agent_events:?}");
        assert!(
            agent_events
                .iter()
                .all(|event| event["data"]["provider"] == provider
                    && event["data"]["providerEvent"].is_object()
                    && event["metadata"]["stepId"].is_string()),
            "{provider}"
        );
        assert!(
            agent_events
                .iter()
                .any(|event| event["data"]["action"].is_string()),
            "{provider}"
        );
    }
}

#[test]
fn each_coding_agents_failures_reach_the_script_with_smol_wfs_messages() {
    let script = r#"
export const meta = { name: "failures", description: "every way a CLI call fails" };
export default async function () {
  const outcome = {};
  for (const scenario of ["exit", "no_session", "missing_final", "error_line", "rate_limit", "failed_tool"]) {
    try {
      await agent(`FAKE:${scenario}`);
      outcome[scenario] = "ok";
    } catch (error) {
      outcome[scenario] = error.message;
    }
  }
  return outcome;
}
"#;
    for (provider, display) in [
        ("claude-code", "Claude Code"),
        ("codex", "Codex"),
        ("opencode", "OpenCode"),
        ("pi", "Pi"),
    ] {
        let cli = Cli::new();
        let path = cli.write("failures.js", script);
        let log = cli.path("calls.jsonl");
        let output = with_fakes(&cli, &["run", &path, "--agent-provider", provider], &log)
            .output()
            .expect("runs");
        assert!(output.status.success(), "{provider}: {}", stderr(&output));
        let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let outcome = &printed["results"];
        assert_eq!(
            outcome["exit"],
            format!("{display} provider exited with code 3: fake failure on stderr"),
            "{provider}"
        );
        let message = |scenario: &str| outcome[scenario].as_str().unwrap_or_default().to_owned();
        assert!(
            message("no_session").ends_with("returned no session id"),
            "{provider}: {outcome}"
        );
        assert!(
            message("missing_final").contains("finished without"),
            "{provider}: {outcome}"
        );
        for scenario in ["error_line", "rate_limit"] {
            assert!(
                message(scenario).starts_with(display),
                "{provider} {scenario}: {outcome}"
            );
        }
        assert_eq!(outcome["failed_tool"], "ok", "{provider}");
        // One try each: retryable failures are retried only when the call's policy says so.
        assert_eq!(calls(&log).len(), 6, "{provider}");
    }
}

#[test]
fn a_call_picks_its_provider_and_unknown_names_are_smol_wfs_error() {
    let cli = Cli::new();
    let log = cli.path("calls.jsonl");
    let script = cli.write(
        "mixed.js",
        r#"
export const meta = { name: "mixed", description: "providers per call" };
export default async function () {
  return [await agent("a"), await agent("b", { provider: "codex" }), await agent("c", { provider: "pi" })];
}
"#,
    );
    let output = with_fakes(&cli, &["run", &script], &log)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        printed["results"],
        json!(["echo: a", "fake codex answer: b", "fake pi answer: c"])
    );
    let agents: Vec<Value> = calls(&log)
        .iter()
        .map(|call| call["agent"].clone())
        .collect();
    assert_eq!(agents, [json!("codex"), json!("pi")]);
    let unknown = cli.write(
        "unknown.js",
        r#"
export const meta = { name: "unknown", description: "x" };
export default async function () { return agent("a", { provider: "gemini" }); }
"#,
    );
    let output = with_fakes(&cli, &["run", &unknown], &log)
        .output()
        .expect("runs");
    assert!(
        stderr(&output).contains("Unknown agent provider: gemini"),
        "{}",
        stderr(&output)
    );
    let output = cli.run(&["run", &script, "--agent-provider", "gemini"]);
    assert_eq!(
        stderr(&output).trim(),
        "error: Unknown agent provider: gemini"
    );
}

#[test]
fn an_environment_variable_names_the_binary() {
    let cli = Cli::new();
    let script = cli.write("flow.js", TWO_CALLS);
    let output = cli
        .command(&["run", &script, "--agent-provider", "claude-code"])
        .env("SMOL_DURABLE_CLAUDE_BIN", fakes().join("claude"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let missing = cli
        .command(&["run", &script, "--agent-provider", "codex"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("runs");
    assert!(
        stderr(&missing).contains("Codex provider could not start codex"),
        "{}",
        stderr(&missing)
    );
}

const SLOW_SECOND_CALL: &str = r#"
export const meta = { name: "slow", description: "a slow call between two quick ones" };
export default async function () {
  const first = await agent("first");
  const second = await agent("second FAKE:slow");
  const third = await agent("third");
  return [first, second, third];
}
"#;

#[test]
fn events_follow_shows_what_a_running_agent_does() {
    let cli = Cli::new();
    let script = cli.write("slow.js", SLOW_SECOND_CALL);
    let log = cli.path("calls.jsonl");
    let mut run = with_fakes(
        &cli,
        &["run", &script, "--agent-provider", "claude-code"],
        &log,
    )
    .env("FAKE_AGENT_SLEEP", "4")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starts");
    let run_id = cli.wait_for_run();
    let mut follow = cli
        .command(&["events", &run_id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("follows");
    let lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The slow call's tool shows up while the call still runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut slow_step = None;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the slow call's events arrive");
        let event: Value = serde_json::from_str(&line).expect("JSON");
        let step = event["metadata"]["stepId"].clone();
        if event["type"] == "workflow.agent_started"
            && event["data"]["promptPreview"] == "second FAKE:slow"
        {
            slow_step = Some(step);
        } else if event["type"] == "workflow.agent_event"
            && slow_step.as_ref() == Some(&step)
            && event["data"]["action"] == "Bash: ls"
        {
            break;
        }
    }
    assert!(
        run.try_wait().expect("status").is_none(),
        "the event came while the run was still going"
    );
    let output = run.wait_with_output().expect("finishes");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(follow.wait().expect("follow ends").success());
}

#[test]
fn a_run_killed_during_an_agent_call_resumes_without_paying_twice() {
    let cli = Cli::new();
    let script = cli.write("slow.js", SLOW_SECOND_CALL);
    let log = cli.path("calls.jsonl");
    kill_9_once_called(
        with_fakes(&cli, &["run", &script, "--agent-provider", "codex"], &log),
        &log,
        2,
    );
    // kill -9 gives the CLI no chance to stop its agent: that is the operator's to clean up.
    kill_group(&calls(&log)[1]);
    let run_id = cli.run_ids()[0].clone();
    let output = with_fakes(&cli, &["run", &script, "--resume-run", &run_id], &log)
        .env("FAKE_AGENT_SLEEP", "0")
        .output()
        .expect("resumes");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(printed["results"][2], "fake codex answer: third");
    let prompts: Vec<String> = calls(&log)
        .iter()
        .map(|call| call["prompt"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        prompts,
        ["first", "second FAKE:slow", "second FAKE:slow", "third"],
        "the completed call never ran again; the one in flight did"
    );
}

#[test]
fn cancelling_a_run_kills_the_agents_whole_process_group() {
    let cli = Cli::new();
    let script = cli.write("slow.js", SLOW_SECOND_CALL);
    let log = cli.path("calls.jsonl");
    let marker = cli.path("tool-finished");
    let run = with_fakes(&cli, &["run", &script, "--agent-provider", "pi"], &log)
        .env("FAKE_AGENT_SLEEP", "3")
        .env("FAKE_AGENT_MARKER", &marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    wait_for_calls(&log, 2);
    // Cancel once the fake runs its (slow) tool.
    let tool_started = cli.path("tool-finished.started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tool_started.exists() {
        assert!(Instant::now() < deadline, "the tool never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run_id = cli.run_ids()[0].clone();
    let cancel = cli.run(&["cancel", &run_id]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let output = run.wait_with_output().expect("ends");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("workflow cancelled"),
        "{}",
        stderr(&output)
    );
    assert!(!group_alive(&calls(&log)[1]), "the agent's group is gone");
    std::thread::sleep(Duration::from_millis(3_500));
    assert!(!marker.exists(), "the agent's tool did not run on");
    assert_eq!(calls(&log).len(), 2, "no call after the cancellation");
}

/// A git repository with one commit, in `dir`.
fn git_repository(dir: &Path) {
    for args in [
        vec!["init", "--quiet"],
        vec![
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "init",
        ],
    ] {
        let status = Command::new("git")
            .args(&args)
            .current_dir(dir)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }
}

fn git_lines(dir: &Path, args: &[&str]) -> Vec<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn agent_branches(dir: &Path) -> Vec<String> {
    git_lines(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/smol-durable/",
        ],
    )
}

#[test]
fn parallel_agents_each_get_a_worktree_which_is_removed_after() {
    let cli = Cli::new();
    git_repository(cli.dir());
    let script = cli.write(
        "isolated.js",
        r#"
export const meta = { name: "isolated", description: "two agents, two checkouts" };
export default async function () {
  return parallel([
    () => agent("left FAKE:slow", { isolation: "worktree" }),
    () => agent("right FAKE:slow", { isolation: "worktree" }),
  ]);
}
"#,
    );
    let log = cli.path("calls.jsonl");
    let output = with_fakes(
        &cli,
        &["run", &script, "--agent-provider", "claude-code"],
        &log,
    )
    .env("FAKE_AGENT_SLEEP", "1")
    .output()
    .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let cwds: Vec<String> = calls(&log)
        .iter()
        .map(|call| call["cwd"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cwds.len(), 2);
    assert_ne!(cwds[0], cwds[1], "each agent has its own checkout");
    for cwd in &cwds {
        assert!(cwd.contains("smol-durable-agent-worktree-"), "{cwd}");
        assert!(cwd.ends_with("/worktree"), "{cwd}");
        assert!(!Path::new(cwd).exists(), "{cwd} was removed");
    }
    assert_eq!(git_lines(cli.dir(), &["worktree", "list"]).len(), 1);
    assert!(agent_branches(cli.dir()).is_empty());
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let detail = cli.json(&["history", printed["runID"].as_str().unwrap(), "-o", "json"]);
    for step in detail["steps"].as_array().unwrap() {
        let isolation = &step["agent"]["isolation"];
        assert_eq!(isolation["kind"], "worktree", "{isolation}");
        assert!(
            isolation["branch"]
                .as_str()
                .unwrap()
                .starts_with("smol-durable/agent-run/"),
            "{isolation}"
        );
        assert!(cwds.contains(&isolation["cwd"].as_str().unwrap().to_owned()));
    }
    let table = cli.ok(&["history", printed["runID"].as_str().unwrap()]);
    assert!(
        table.contains("worktree smol-durable/agent-run/"),
        "{table}"
    );
}

#[test]
fn a_worktree_left_by_a_killed_run_is_removed_at_the_next_start() {
    let cli = Cli::new();
    git_repository(cli.dir());
    std::fs::create_dir(cli.path("sub")).unwrap();
    let script = cli.write(
        "sub/isolated.js",
        r#"
export const meta = { name: "isolated", description: "one slow isolated agent" };
export default async function () {
  await agent("quick", { isolation: "worktree" });
  return agent("slow FAKE:slow", { isolation: "worktree" });
}
"#,
    );
    let log = cli.path("calls.jsonl");
    let mut command = with_fakes(
        &cli,
        &["run", &script, "--agent-provider", "opencode"],
        &log,
    );
    command.current_dir(cli.path("sub"));
    kill_9_once_called(command, &log, 2);
    // The orphaned agent goes on in the worktree until the next start stops it.
    let left = calls(&log)[1].clone();
    assert!(group_alive(&left));
    let cwd = left["cwd"].as_str().unwrap().to_owned();
    assert!(
        cwd.ends_with("/worktree/sub"),
        "the workflow's sub-directory: {cwd}"
    );
    assert!(Path::new(&cwd).exists());
    assert_eq!(git_lines(cli.dir(), &["worktree", "list"]).len(), 2);
    assert_eq!(agent_branches(cli.dir()).len(), 1);
    // The next run in the repository (a resume here) clears the leftovers first.
    let run_id = cli.run_ids()[0].clone();
    let output = with_fakes(&cli, &["run", &script, "--resume-run", &run_id], &log)
        .current_dir(cli.path("sub"))
        .env("FAKE_AGENT_SLEEP", "0")
        .output()
        .expect("resumes");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!Path::new(&cwd).exists(), "{cwd} was removed");
    assert!(!group_alive(&left), "the orphaned agent was stopped");
    assert_eq!(git_lines(cli.dir(), &["worktree", "list"]).len(), 1);
    assert!(
        agent_branches(cli.dir()).is_empty(),
        "{:?}",
        agent_branches(cli.dir())
    );
    // The replayed call made no worktree and no call; the one in flight ran again.
    let prompts: Vec<Value> = calls(&log)
        .iter()
        .map(|call| call["prompt"].clone())
        .collect();
    assert_eq!(
        prompts,
        [
            json!("quick"),
            json!("slow FAKE:slow"),
            json!("slow FAKE:slow")
        ]
    );
}

#[test]
fn isolation_outside_a_repository_is_smol_wfs_error() {
    let cli = Cli::new();
    let script = cli.write(
        "isolated.js",
        r#"
export const meta = { name: "isolated", description: "x" };
export default async function () { return agent("a", { isolation: "worktree" }); }
"#,
    );
    let output = cli.run(&["run", &script]);
    assert!(
        stderr(&output).contains(
            "agent isolation='worktree' requires the workflow cwd to be inside a git repository"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_anthropic_provider_runs_through_the_cli() {
    let server = StubHttpServer::start(vec![StubResponse::json(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-stub",
            "content": [{ "type": "text", "text": "bonjour" }], "stop_reason": "end_turn",
            "usage": { "input_tokens": 4, "output_tokens": 2, "cache_creation_input_tokens": 1,
                "cache_read_input_tokens": 30 }
        }),
    )]);
    let cli = Cli::new();
    let script = cli.write(
        "hello.js",
        r#"
export const meta = { name: "hello", description: "x" };
export default async function () { return agent("say hello", { model: "claude-x" }); }
"#,
    );
    let output = cli
        .command(&["run", &script, "--agent-provider", "anthropic"])
        .env("ANTHROPIC_BASE_URL", server.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(printed["results"], "bonjour");
    assert_eq!(
        printed["tokenUsage"],
        json!({ "inputTokens": 4, "outputTokens": 2, "totalTokens": 7 })
    );
    let detail = cli.json(&["history", printed["runID"].as_str().unwrap(), "-o", "json"]);
    assert_eq!(detail["steps"][0]["agent"]["sessionId"], "msg_1");
    assert_eq!(detail["steps"][0]["tokenUsage"]["cacheReadTokens"], 30);
    assert_eq!(server.requests()[0].header("x-api-key"), Some("sk-test"));
}

#[test]
fn a_stale_worktree_whose_directory_is_gone_is_still_removed() {
    let cli = Cli::new();
    git_repository(cli.dir());
    let script = cli.write("isolated.js", ONE_SLOW_ISOLATED);
    let log = cli.path("calls.jsonl");
    kill_9_once_called(
        with_fakes(&cli, &["run", &script, "--agent-provider", "pi"], &log),
        &log,
        1,
    );
    let left = calls(&log)[0].clone();
    kill_group(&left);
    // The temporary directory went (a reboot, tmpfiles): git still records the worktree.
    let worktree = PathBuf::from(left["cwd"].as_str().unwrap());
    std::fs::remove_dir_all(worktree.parent().unwrap()).expect("rm");
    assert_eq!(git_lines(cli.dir(), &["worktree", "list"]).len(), 2);
    let other = cli.write("plain.js", PLAIN);
    let output = cli.run(&["run", &other]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(git_lines(cli.dir(), &["worktree", "list"]).len(), 1);
    assert!(
        agent_branches(cli.dir()).is_empty(),
        "{:?}",
        agent_branches(cli.dir())
    );
}

#[test]
fn a_live_runs_worktree_survives_another_runs_start() {
    let cli = Cli::new();
    git_repository(cli.dir());
    let script = cli.write("isolated.js", ONE_SLOW_ISOLATED);
    let log = cli.path("calls.jsonl");
    let first = with_fakes(&cli, &["run", &script, "--agent-provider", "codex"], &log)
        .env("FAKE_AGENT_SLEEP", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    wait_for_calls(&log, 1);
    let worktree = PathBuf::from(calls(&log)[0]["cwd"].as_str().unwrap());
    // Another run starts in the repository (and cleans up) while the first one's agent works.
    let other = cli.write("plain.js", PLAIN);
    let output = cli.run(&["run", &other]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(worktree.exists(), "the live run's worktree was left alone");
    assert!(group_alive(&calls(&log)[0]), "and so was its agent");
    let output = first.wait_with_output().expect("ends");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!worktree.exists());
}

#[test]
fn a_call_past_its_timeout_stops_the_agent_and_everything_it_started() {
    let cli = Cli::new();
    let script = cli.write(
        "timeout.js",
        r#"
export const meta = { name: "timeout", description: "a slow agent with a deadline" };
export default async function () {
  try {
    return await agent("slow FAKE:slow", { timeoutMs: 1500 });
  } catch (error) {
    return error.message;
  }
}
"#,
    );
    let log = cli.path("calls.jsonl");
    let marker = cli.path("tool-finished");
    let started = Instant::now();
    let output = with_fakes(
        &cli,
        &["run", &script, "--agent-provider", "claude-code"],
        &log,
    )
    .env("FAKE_AGENT_SLEEP", "4")
    .env("FAKE_AGENT_MARKER", &marker)
    .output()
    .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        printed["results"],
        "claude-code provider timed out after 1500 ms (timeoutMs)"
    );
    assert!(
        cli.path("tool-finished.started").exists(),
        "the tool had started"
    );
    assert!(!group_alive(&calls(&log)[0]));
    std::thread::sleep(Duration::from_millis(3_000));
    assert!(!marker.exists(), "the agent's tool was stopped with it");
}

/// Waits until the process group of `call` has no running process, or fails after 5 s.
fn wait_group_gone(call: &Value, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(call) {
        assert!(Instant::now() < deadline, "{what} outlived its caller");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn opencodes_server_goes_with_a_killed_caller() {
    let cli = Cli::new();
    let script = cli.write(
        "structured.js",
        r#"
export const meta = { name: "structured", description: "a slow call in server mode" };
export default async function () {
  return agent("slow FAKE:slow", { schema: { type: "object", properties: { answer: { type: "number" } } } });
}
"#,
    );
    let log = cli.path("calls.jsonl");
    kill_9_once_called(
        with_fakes(
            &cli,
            &["run", &script, "--agent-provider", "opencode"],
            &log,
        ),
        &log,
        1,
    );
    let server = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|call| call["mode"] == "serve")
        .expect("the server's start was logged");
    wait_group_gone(&server, "`opencode serve`");
}

#[test]
fn a_second_interrupt_exits_at_once_and_takes_the_agents_along() {
    let cli = Cli::new();
    let script = cli.write("slow.js", SLOW_SECOND_CALL);
    let log = cli.path("calls.jsonl");
    std::fs::create_dir(cli.path("raw")).unwrap();
    let raw = cli.path("raw");
    // With a session-log sink, the first interrupt lets the call finish (for its transcript).
    let run = with_fakes(
        &cli,
        &[
            "run",
            &script,
            "--agent-provider",
            "claude-code",
            "--save-raw-sessions",
            raw.to_str().unwrap(),
        ],
        &log,
    )
    .env("FAKE_AGENT_SLEEP", "30")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starts");
    wait_for_calls(&log, 2);
    for _ in 0..2 {
        let status = Command::new("kill")
            .args(["-INT", &run.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    let output = run.wait_with_output().expect("exits");
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    wait_group_gone(&calls(&log)[1], "the agent in flight");
}
