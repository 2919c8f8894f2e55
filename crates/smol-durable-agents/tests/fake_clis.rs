//! Each provider against a fake of its CLI (`tests/fakes/`, Python scripts printing what the
//! real CLIs print today): answers, structured output, usage with cache and cost, session ids,
//! live events, every error variant, and the process group killed when a call is dropped.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable_agents::{ClaudeCodeProvider, CodexProvider, OpencodeProvider, PiProvider};
use smol_durable_core::{
    AgentEvent, AgentEvents, AgentProvider, AgentRequest, AgentResponse, ProviderError,
    ProviderErrorKind,
};

/// The four fakes, by provider.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cli {
    Claude,
    Codex,
    Opencode,
    Pi,
}

const ALL: [Cli; 4] = [Cli::Claude, Cli::Codex, Cli::Opencode, Cli::Pi];

impl Cli {
    fn fake(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Opencode => "opencode",
            Cli::Pi => "pi",
        }
    }

    fn display(self) -> &'static str {
        match self {
            Cli::Claude => "Claude Code",
            Cli::Codex => "Codex",
            Cli::Opencode => "OpenCode",
            Cli::Pi => "Pi",
        }
    }

    fn provider(self, program: PathBuf) -> Arc<dyn AgentProvider> {
        match self {
            Cli::Claude => Arc::new(ClaudeCodeProvider::new().program(program)),
            Cli::Codex => Arc::new(CodexProvider::new().program(program)),
            Cli::Opencode => Arc::new(OpencodeProvider::new().program(program)),
            Cli::Pi => Arc::new(PiProvider::new().program(program)),
        }
    }
}

/// A fake in a directory of its own, behind a wrapper setting `env` (the fakes read their log
/// file, sleep and marker from the environment).
struct Fake {
    dir: tempfile::TempDir,
    cli: Cli,
}

impl Fake {
    fn new(cli: Cli, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fakes")
            .join(cli.fake());
        let mut script = String::from("#!/bin/sh\n");
        for (name, value) in env {
            script.push_str(&format!("export {name}='{value}'\n"));
        }
        script.push_str(&format!(
            "export FAKE_AGENT_LOG='{}'\nexport FAKE_AGENT_LINE_DELAY=0.01\nexec '{}' \"$@\"\n",
            dir.path().join("calls.jsonl").display(),
            fake.display()
        ));
        let wrapper = dir.path().join(cli.fake());
        std::fs::write(&wrapper, script).expect("wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { dir, cli }
    }

    fn provider(&self) -> Arc<dyn AgentProvider> {
        self.cli.provider(self.dir.path().join(self.cli.fake()))
    }

    /// The calls the fake logged.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("log line"))
            .collect()
    }
}

type Seen = Arc<Mutex<Vec<AgentEvent>>>;

fn request(prompt: &str, options: Value) -> (AgentRequest, Seen) {
    let seen: Seen = Arc::default();
    let mut request = AgentRequest::new(prompt);
    request.options = options;
    let sink = Arc::clone(&seen);
    request.events = AgentEvents::new(move |event| sink.lock().unwrap().push(event));
    (request, seen)
}

async fn call(
    cli: Cli,
    prompt: &str,
    options: Value,
) -> (Result<AgentResponse, ProviderError>, Vec<AgentEvent>, Fake) {
    let fake = Fake::new(cli, &[]);
    let (request, seen) = request(prompt, options);
    let result = fake.provider().run(request).await;
    let events = seen.lock().unwrap().clone();
    (result, events, fake)
}

fn cost(response: &AgentResponse) -> Option<f64> {
    response
        .usage
        .as_ref()?
        .cost
        .as_ref()
        .map(|cost| cost.total)
}

#[tokio::test]
async fn every_cli_answers_with_session_model_usage_cache_and_cost() {
    for cli in ALL {
        let (result, events, fake) = call(cli, "hello there\nmore", Value::Null).await;
        let response = result.unwrap_or_else(|error| panic!("{cli:?}: {error}"));
        assert_eq!(
            response.output,
            json!(format!("fake {} answer: hello there", cli.fake())),
            "{cli:?}"
        );
        let usage = response.usage.clone().expect("usage");
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.total_tokens
            ),
            (Some(11), Some(7), Some(100), Some(5), Some(23)),
            "{cli:?}: input excludes the cache; total = input + output + cache writes"
        );
        match cli {
            // Codex reports no cost and no model.
            Cli::Codex => {
                assert_eq!(cost(&response), None);
                assert_eq!(response.model, None);
            }
            _ => {
                let total = cost(&response).unwrap_or_else(|| panic!("{cli:?}: no cost"));
                assert!((total - 0.0123).abs() < 1e-9, "{cli:?}: cost {total}");
                assert_eq!(
                    response
                        .usage
                        .as_ref()
                        .unwrap()
                        .cost
                        .as_ref()
                        .unwrap()
                        .currency,
                    "USD"
                );
            }
        }
        let expected_session = match cli {
            Cli::Claude => "fake-claude-session",
            Cli::Codex => "fake-codex-thread",
            Cli::Opencode => "ses_fake_opencode",
            Cli::Pi => "fake-pi-session",
        };
        assert_eq!(
            response.session_id.as_deref(),
            Some(expected_session),
            "{cli:?}"
        );
        if cli == Cli::Claude {
            assert_eq!(response.model.as_deref(), Some("claude-fake-model"));
        }
        if cli == Cli::Pi {
            assert_eq!(response.model.as_deref(), Some("pi-fake-model"));
        }
        let raw = response
            .raw
            .as_ref()
            .and_then(Value::as_array)
            .expect("raw lines");
        assert_eq!(events.len(), raw.len(), "{cli:?}: one event per line");
        assert!(
            events.iter().any(|event| event.action.is_some()),
            "{cli:?}: a tool call is summarised: {events:?}"
        );
        assert!(
            events
                .iter()
                .skip(1)
                .all(|event| event.session_id.as_deref() == Some(expected_session)),
            "{cli:?}: events carry the session once known"
        );
        // The prompt reached the CLI whole.
        let calls = fake.calls();
        assert_eq!(calls.len(), 1, "{cli:?}");
        assert_eq!(calls[0]["prompt"], json!("hello there\nmore"), "{cli:?}");
    }
}

#[tokio::test]
async fn command_lines_carry_model_thinking_and_agent_as_smol_wf_did() {
    let options =
        |model: &str| json!({ "model": model, "thinking": "high", "agentType": "reviewer" });
    let (result, _, fake) = call(Cli::Claude, "x", options("opus")).await;
    result.expect("claude");
    assert_eq!(
        fake.calls()[0]["argv"],
        json!([
            "--model",
            "opus",
            "--effort",
            "high",
            "--agent",
            "reviewer",
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "text",
            "--print"
        ])
    );
    let (result, _, fake) = call(Cli::Codex, "x", json!({ "model": "gpt-5" })).await;
    result.expect("codex");
    let argv: Vec<Value> = serde_json::from_value(fake.calls()[0]["argv"].clone()).unwrap();
    assert_eq!(argv[0], json!("exec"));
    assert_eq!(argv[1], json!("--skip-git-repo-check"));
    assert_eq!(argv[2..4], [json!("--model"), json!("gpt-5")]);
    assert_eq!(argv[4], json!("--json"));
    assert_eq!(argv[5], json!("--output-last-message"));
    assert_eq!(argv.last(), Some(&json!("-")));
    let (result, _, fake) = call(Cli::Opencode, "x", options("anthropic/claude-x")).await;
    result.expect("opencode");
    assert_eq!(
        fake.calls()[0]["argv"],
        json!([
            "run",
            "--format",
            "json",
            "--model",
            "anthropic/claude-x",
            "--variant",
            "high",
            "--agent",
            "reviewer",
            "x"
        ])
    );
    let (result, _, fake) = call(Cli::Pi, "x", options("pi-model")).await;
    result.expect("pi");
    let argv: Vec<Value> = serde_json::from_value(fake.calls()[0]["argv"].clone()).unwrap();
    assert_eq!(
        argv[..6],
        [
            json!("--print"),
            json!("--mode"),
            json!("json"),
            json!("--model"),
            json!("pi-model"),
            json!("--thinking")
        ]
    );
    assert!(argv[7].as_str().unwrap().starts_with('@'), "{argv:?}");
}

#[tokio::test]
async fn structured_output_goes_through_each_clis_own_mechanism() {
    let schema = json!({ "type": "object", "properties": { "verdict": { "type": "string" },
        "score": { "type": "number" } }, "required": ["verdict"] });
    for cli in ALL {
        let prompt = "review it\nFAKE_JSON: {\"verdict\": \"ship\", \"score\": 9}";
        let (result, _, fake) = call(cli, prompt, json!({ "schema": schema })).await;
        let response = result.unwrap_or_else(|error| panic!("{cli:?}: {error}"));
        assert_eq!(
            response.output,
            json!({ "verdict": "ship", "score": 9 }),
            "{cli:?}"
        );
        let calls = fake.calls();
        let argv: Vec<String> = serde_json::from_value(calls[0]["argv"].clone()).unwrap();
        match cli {
            Cli::Claude => assert!(argv.contains(&"--json-schema".to_owned()), "{argv:?}"),
            Cli::Codex => assert!(argv.contains(&"--output-schema".to_owned()), "{argv:?}"),
            Cli::Opencode => assert_eq!(argv[0], "serve", "structured output needs the server"),
            Cli::Pi => assert!(argv.contains(&"--extension".to_owned()), "{argv:?}"),
        }
    }
    // pi wraps a non-object schema as { value }.
    let (result, _, _) = call(
        Cli::Pi,
        "count\nFAKE_JSON: 3",
        json!({ "schema": { "type": "number" } }),
    )
    .await;
    assert_eq!(result.expect("pi").output, json!(3));
    // An answer fenced in prose is still found.
    for cli in [Cli::Claude, Cli::Codex] {
        let (result, _, _) = call(
            cli,
            "FAKE:fenced_json\nFAKE_JSON: {\"verdict\": \"hold\"}",
            json!({ "schema": schema }),
        )
        .await;
        assert_eq!(
            result.expect("fenced").output["verdict"],
            json!("hold"),
            "{cli:?}"
        );
    }
}

#[tokio::test]
async fn a_non_zero_exit_is_smol_wfs_error_with_stderr() {
    for cli in ALL {
        let (result, _, _) = call(cli, "FAKE:exit", Value::Null).await;
        let error = result.expect_err("fails");
        assert_eq!(
            error.to_string(),
            format!(
                "{} provider exited with code 3: fake failure on stderr",
                cli.display()
            ),
            "{cli:?}"
        );
        assert_eq!(error.kind(), ProviderErrorKind::Terminal, "{cli:?}");
    }
}

#[tokio::test]
async fn a_missing_session_id_or_final_line_fails() {
    for cli in ALL {
        let (result, _, _) = call(cli, "FAKE:no_session", Value::Null).await;
        let error = result.expect_err("no session");
        assert!(
            error.to_string().contains("no session id"),
            "{cli:?}: {error}"
        );
        let (result, _, _) = call(cli, "FAKE:missing_final", Value::Null).await;
        let error = result.expect_err("no final line");
        assert_eq!(
            error.kind(),
            ProviderErrorKind::InvalidResponse,
            "{cli:?}: {error}"
        );
        assert!(
            error.to_string().contains("finished without"),
            "{cli:?}: {error}"
        );
    }
}

#[tokio::test]
async fn error_lines_fail_and_failed_tools_do_not() {
    for cli in ALL {
        let (result, _, _) = call(cli, "FAKE:error_line", Value::Null).await;
        let error = result.expect_err("error line");
        assert!(
            error.to_string().starts_with(cli.display()),
            "{cli:?}: {error}"
        );
        assert!(!error.is_retryable(), "{cli:?}: {error}");
        let (result, events, _) = call(cli, "FAKE:failed_tool", Value::Null).await;
        result.unwrap_or_else(|error| {
            panic!("{cli:?}: a failed tool is the agent's business: {error}")
        });
        assert!(events.len() > 3, "{cli:?}");
    }
    let (result, _, _) = call(Cli::Codex, "FAKE:nonfatal_error", Value::Null).await;
    result.expect("a codex error line before the turn is a warning");
}

#[tokio::test]
async fn rate_limits_and_overloads_are_retryable() {
    for cli in ALL {
        let (result, _, _) = call(cli, "FAKE:rate_limit", Value::Null).await;
        let error = result.expect_err("rate limited");
        assert!(
            error.is_retryable(),
            "{cli:?}: {error} ({:?})",
            error.kind()
        );
    }
    let (result, _, _) = call(Cli::Claude, "FAKE:api_error_529", Value::Null).await;
    let error = result.expect_err("overloaded");
    assert_eq!(error.kind(), ProviderErrorKind::Transient, "{error}");
    assert!(error.to_string().contains("529"), "{error}");
}

#[tokio::test]
async fn claude_result_subtypes_are_errors_even_without_is_error() {
    for (scenario, detail) in [
        (
            "error_max_turns",
            "error_max_turns: Reached maximum number of turns",
        ),
        ("error_during_execution", "error_during_execution"),
        ("error_max_budget_usd", "error_max_budget_usd"),
    ] {
        let (result, _, _) = call(Cli::Claude, &format!("FAKE:{scenario}"), Value::Null).await;
        let error = result.expect_err(scenario);
        assert!(error.to_string().contains(detail), "{scenario}: {error}");
        assert!(
            error.to_string().starts_with("Claude Code provider"),
            "{error}"
        );
        assert_eq!(error.kind(), ProviderErrorKind::Terminal, "{scenario}");
        // What the failed call spent is billed.
        assert_eq!(
            error.usage().and_then(|usage| usage.output_tokens),
            Some(7),
            "{scenario}"
        );
    }
    let (result, _, _) = call(Cli::Claude, "FAKE:legacy_cost", Value::Null).await;
    let response = result.expect("older claude");
    assert!(cost(&response).is_some(), "cost_usd is read too");
}

#[tokio::test]
async fn what_pi_recovered_from_by_itself_is_no_failure() {
    let (result, events, _) = call(Cli::Pi, "FAKE:auto_retry", Value::Null).await;
    let response = result.expect("pi retried the overloaded call and answered");
    assert_eq!(response.output, json!("fake pi answer: FAKE:auto_retry"));
    assert!(events
        .iter()
        .any(|event| event.provider_event["type"] == "auto_retry_start"));
}

#[tokio::test]
async fn unusable_answers_still_bill_what_they_cost() {
    for cli in [Cli::Claude, Cli::Opencode, Cli::Pi] {
        let (result, _, _) = call(cli, "FAKE:no_session", Value::Null).await;
        let error = result.expect_err("no session");
        assert_eq!(
            error.usage().and_then(|usage| usage.output_tokens),
            Some(7),
            "{cli:?}: {error}"
        );
    }
    for cli in [Cli::Opencode, Cli::Pi] {
        let (result, _, _) = call(cli, "FAKE:missing_final", Value::Null).await;
        let error = result.expect_err("no final line");
        assert!(error.usage().is_some(), "{cli:?}: {error}");
    }
}

#[tokio::test]
async fn pi_without_the_result_tool_call_fails() {
    let (result, _, _) = call(
        Cli::Pi,
        "FAKE:no_tool_call",
        json!({ "schema": { "type": "object", "properties": {} } }),
    )
    .await;
    let error = result.expect_err("no tool call");
    assert!(error.to_string().contains("workflow_result"), "{error}");
}

#[tokio::test]
async fn the_cli_runs_in_the_calls_working_directory() {
    let dir = tempfile::tempdir().expect("dir");
    for cli in ALL {
        let fake = Fake::new(cli, &[]);
        let (mut request, _) = request("where", Value::Null);
        request.context.cwd = Some(dir.path().to_string_lossy().into_owned());
        fake.provider().run(request).await.expect("answers");
        let cwd = fake.calls()[0]["cwd"].as_str().unwrap().to_owned();
        assert_eq!(
            std::fs::canonicalize(cwd).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap(),
            "{cli:?}"
        );
    }
}

#[tokio::test]
async fn events_arrive_while_the_call_runs_and_a_dropped_call_kills_the_whole_group() {
    for cli in ALL {
        let markers = tempfile::tempdir().expect("dir");
        let marker = markers.path().join("grandchild-finished");
        let fake = Fake::new(
            cli,
            &[
                ("FAKE_AGENT_SLEEP", "3"),
                ("FAKE_AGENT_MARKER", &marker.to_string_lossy()),
            ],
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut request = AgentRequest::new("FAKE:slow");
        request.events = AgentEvents::new(move |event| {
            let _ = tx.send(event);
        });
        let provider = fake.provider();
        let started = Instant::now();
        let call = tokio::spawn(async move { provider.run(request).await });
        // The first line shows up long before the call could end (the fake sleeps 3 s).
        let first = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{cli:?}: no live event"))
            .expect("event");
        assert!(
            !call.is_finished(),
            "{cli:?}: the event came before the end"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{cli:?}");
        drop(first);
        // Cancel only once the agent's tool (a grandchild) runs.
        let tool_started = PathBuf::from(format!("{}.started", marker.display()));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !tool_started.exists() {
            assert!(Instant::now() < deadline, "{cli:?}: the tool never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Cancelling drops the call: the CLI and the tool it started must both go.
        call.abort();
        let _ = call.await;
        tokio::time::sleep(Duration::from_millis(3_600)).await;
        assert!(
            !marker.exists(),
            "{cli:?}: the grandchild survived the cancelled call"
        );
        let pgid = fake.calls()[0]["pgid"].as_u64().unwrap() as u32;
        let alive = smol_durable_testkit::process_group_running(pgid);
        assert!(!alive, "{cli:?}: the process group is gone");
    }
}

#[tokio::test]
async fn a_missing_binary_is_a_clear_terminal_error() {
    for cli in ALL {
        let provider = cli.provider(PathBuf::from("/nonexistent/agent-cli"));
        let error = provider
            .run(AgentRequest::new("x"))
            .await
            .expect_err("no binary");
        assert!(
            error.to_string().starts_with(&format!(
                "{} provider could not start /nonexistent/agent-cli",
                cli.display()
            )),
            "{cli:?}: {error}"
        );
        assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    }
}

#[tokio::test]
async fn opencodes_server_mode_reports_errors_like_the_command() {
    let schema =
        json!({ "schema": { "type": "object", "properties": { "a": { "type": "number" } } } });
    let (result, _, _) = call(Cli::Opencode, "FAKE:exit", schema.clone()).await;
    let error = result.expect_err("the server exits at once");
    assert_eq!(
        error.to_string(),
        "OpenCode provider exited with code 3: fake failure on stderr"
    );
    let (result, _, _) = call(Cli::Opencode, "FAKE:rate_limit", schema.clone()).await;
    let error = result.expect_err("rate limited");
    assert!(error.is_retryable(), "{error}");
    let (result, _, _) = call(Cli::Opencode, "FAKE:structured_missing", schema.clone()).await;
    let error = result.expect_err("no structured answer");
    assert!(
        error.to_string().contains("StructuredOutputError"),
        "{error}"
    );
    // A prompt too long for a command line goes to the server too, without a schema.
    let long = format!("{}\n{}", "long prompt", "x".repeat(40_000));
    let (result, events, fake) = call(Cli::Opencode, &long, Value::Null).await;
    assert_eq!(
        result.expect("long prompt").output,
        json!("fake opencode answer: long prompt")
    );
    assert_eq!(fake.calls()[0]["argv"][0], json!("serve"));
    assert!(
        events.iter().any(|event| event.action.is_some()),
        "{events:?}"
    );
}

#[tokio::test]
async fn what_a_cli_leaves_running_does_not_hold_the_call_and_is_stopped() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("background-finished");
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/claude");
    // The agent answers, then leaves a background job holding its stdout and stderr.
    let script = dir.path().join("claude");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n'{}' \"$@\"\n(sleep 3; touch '{}') &\nexit 0\n",
            fake.display(),
            marker.display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let started = Instant::now();
    let response = ClaudeCodeProvider::new()
        .program(&script)
        .run(AgentRequest::new("hello"))
        .await
        .expect("answers");
    assert_eq!(response.output, json!("fake claude answer: hello"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call ended with the CLI, not with its background job: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        !marker.exists(),
        "the background job was stopped with the CLI's group"
    );
}

#[tokio::test]
async fn the_prompt_file_is_readable_by_this_user_only() {
    // pi reads its prompt from a file: a fake that reports the file's directory's mode.
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("pi");
    let seen = dir.path().join("mode");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor last; do :; done\nstat -c %a \"$(dirname \"${{last#@}}\")\" > '{}'\nexit 1\n",
            seen.display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _ = PiProvider::new()
        .program(&script)
        .run(AgentRequest::new("secret"))
        .await;
    assert_eq!(std::fs::read_to_string(&seen).expect("mode").trim(), "700");
}
