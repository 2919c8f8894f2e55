//! `opencode`: `opencode run --format json`, and `opencode serve` for what a command line
//! cannot carry (structured output, long prompts).

mod server;

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::process::working_dir;
use smol_durable_core::{AgentProvider, AgentRequest, AgentResponse, ProviderError, UsageCost};

use crate::answer::{count, schema, text, Tokens};
use crate::process::{self, Invocation, Watch};
use crate::{cli_provider, invalid, no_session, option, tool_call};

const DISPLAY: &str = "OpenCode";

/// Longer prompts go through the server: a command line has a size limit.
const LONGEST_ARGUMENT_PROMPT: usize = 32_000;

cli_provider! {
    /// Runs `opencode run --format json [--model provider/model] [--variant T] [--agent A]
    /// <prompt>` (smol-wf's command line), or — for a call with a `schema`, or a prompt over
    /// 32 000 bytes — starts `opencode serve --hostname 127.0.0.1 --port 0` and sends the prompt
    /// to a new session over HTTP (`POST /session`, `POST /session/{id}/message`), with
    /// `format: {type: "json_schema", schema, retryCount: 2}` when there is a schema; the answer
    /// is then the message's `structured` value, usage is summed over the session's assistant
    /// messages (`GET /session/{id}/message`), and the parts become events when the message is
    /// done (the server streams them only over its `/event` feed, which this provider does not
    /// follow).
    ///
    /// - `model` must be `provider/model` (checked by the engine); `thinking` → `--variant`,
    ///   `agentType` → `--agent`.
    /// - The session id is the lines' `sessionID`; usage and cost are summed over the
    ///   `step_finish` parts (`tokens.input`, `tokens.output`, `tokens.cache.read|write`,
    ///   `cost`); the answer is the last `text` part. opencode prints no model: the model is the
    ///   call's.
    /// - An `error` line, a non-zero exit, or an end without a final step (`done`, or a
    ///   `step_finish` whose reason is not `tool-calls`) fails the call; an error opencode
    ///   marks retryable (or a 429 / overload) is retryable.
    OpencodeProvider {
        name: "opencode",
        command: "opencode",
        bin_variable: "SMOL_DURABLE_OPENCODE_BIN",
        args_variable: "SMOL_DURABLE_OPENCODE_ARGS",
        args_go: "placed after `run` (server mode takes none)",
    }
}

impl OpencodeProvider {
    async fn run_command(&self, request: &AgentRequest) -> Result<AgentResponse, ProviderError> {
        let mut args: Vec<std::ffi::OsString> = vec!["run".into()];
        args.extend(self.cli.extra_args()?);
        args.extend(["--format".into(), "json".into()]);
        for (flag, option_name) in [
            ("--model", "model"),
            ("--variant", "thinking"),
            ("--agent", "agentType"),
        ] {
            if let Some(value) = option(request, option_name) {
                args.extend([flag.into(), value.into()]);
            }
        }
        args.push(request.prompt.clone().into());
        let invocation = Invocation {
            display: DISPLAY,
            program: self.cli.program.clone(),
            args,
            cwd: working_dir(request),
            stdin: None,
        };
        let watch = Watch {
            session: |line| text(line, "/sessionID"),
            action,
        };
        let finished = process::run_watched(invocation, &request.events, watch).await?;
        let parts: Vec<&Value> = finished
            .lines
            .iter()
            .filter(|line| text(line, "/type") == Some("step_finish"))
            .filter_map(|line| line.get("part"))
            .collect();
        let mut tokens = Tokens::default();
        for part in &parts {
            tokens.add(step_tokens(part));
        }
        let usage = (!parts.is_empty()).then(|| tokens.usage());
        let error = finished
            .lines
            .iter()
            .rev()
            .find(|line| text(line, "/type") == Some("error"));
        if let Some(failed) = finished.failure(
            error.map(error_detail).as_deref(),
            error.and_then(error_status),
            usage.clone(),
        ) {
            return Err(retryable_if_marked(failed, error));
        }
        // Done: a `done` line (newer builds), else a last step that did not stop for tools.
        let finished_turn = finished
            .lines
            .iter()
            .any(|line| text(line, "/type") == Some("done"))
            || parts.last().is_some_and(|part| {
                !matches!(text(part, "/reason"), Some("tool-calls" | "tool_calls"))
            });
        if !finished_turn {
            return Err(invalid(
                format!("{DISPLAY} provider finished without a final step_finish line"),
                usage,
            ));
        }
        let Some(session) = finished.session.clone() else {
            return Err(no_session(DISPLAY, usage));
        };
        let answer = finished
            .lines
            .iter()
            .rev()
            .find_map(|line| {
                (text(line, "/type") == Some("text"))
                    .then(|| text(line, "/part/text"))
                    .flatten()
            })
            .unwrap_or_default()
            .to_owned();
        let mut response = AgentResponse::new(Value::String(answer))
            .with_session_id(session)
            .with_raw(Value::Array(finished.lines));
        response.usage = usage;
        response.model = request.model().map(str::to_owned);
        Ok(response)
    }
}

#[async_trait]
impl AgentProvider for OpencodeProvider {
    fn name(&self) -> &str {
        &self.cli.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        if schema(&request).is_some() || request.prompt.len() > LONGEST_ARGUMENT_PROMPT {
            server::run(&self.cli.program, &request).await
        } else {
            self.run_command(&request).await
        }
    }
}

/// One step's usage (a `step_finish` part, or a message's `info`).
fn step_tokens(part: &Value) -> Tokens {
    Tokens {
        input: count(part, "/tokens/input"),
        output: count(part, "/tokens/output"),
        cache_read: count(part, "/tokens/cache/read"),
        cache_write: count(part, "/tokens/cache/write"),
        cost: part.get("cost").and_then(Value::as_f64).map(UsageCost::usd),
    }
}

/// `name: message` of an error line's `error`.
fn error_detail(line: &Value) -> String {
    let error = line.get("error").unwrap_or(line);
    let message = text(error, "/data/message")
        .or_else(|| text(error, "/message"))
        .unwrap_or_default();
    match text(error, "/name") {
        Some(name) if !message.is_empty() => format!("{name}: {message}"),
        Some(name) => name.to_owned(),
        None => message.to_owned(),
    }
}

/// The HTTP status an error line passes on.
fn error_status(line: &Value) -> Option<u64> {
    line.pointer("/error/data/statusCode")
        .and_then(Value::as_u64)
}

/// `failed`, made retryable when opencode marks the error so (`data.isRetryable`).
fn retryable_if_marked(failed: ProviderError, error: Option<&Value>) -> ProviderError {
    let marked = error
        .and_then(|line| line.pointer("/error/data/isRetryable"))
        .and_then(Value::as_bool)
        == Some(true);
    if !marked || failed.is_retryable() {
        return failed;
    }
    let retryable = ProviderError::transient(failed.to_string());
    match failed.usage() {
        Some(usage) => retryable.with_usage(usage.clone()),
        None => retryable,
    }
}

/// A tool the agent uses.
fn action(line: &Value) -> Option<String> {
    (text(line, "/type") == Some("tool_use"))
        .then(|| tool_call(line, "/part/tool", "/part/state/input"))
}
