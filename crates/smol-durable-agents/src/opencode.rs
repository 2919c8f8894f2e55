//! `opencode`: `opencode run --format json`, and `opencode serve` for what a command line
//! cannot carry (structured output, long prompts).

mod server;

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::process::working_dir;
use smol_durable_core::{
    AgentEvent, AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind,
    UsageCost,
};

use crate::answer::{count, text, Tokens};
use crate::process::{self, Invocation};
use crate::{failure, no_session, option, tool_action, Binary};

const DISPLAY: &str = "OpenCode";

/// Longer prompts go through the server: a command line has a size limit.
const LONGEST_ARGUMENT_PROMPT: usize = 32_000;

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
#[derive(Debug, Clone)]
pub struct OpencodeProvider {
    name: String,
    binary: Binary,
}

impl OpencodeProvider {
    /// The name scripts and the CLI select it by.
    pub const NAME: &'static str = "opencode";

    /// The environment variable naming the `opencode` binary (default: `opencode` on `PATH`).
    pub const BIN_VARIABLE: &'static str = "SMOL_DURABLE_OPENCODE_BIN";

    /// A provider running `opencode` from [`BIN_VARIABLE`](Self::BIN_VARIABLE) or `PATH`.
    pub fn new() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            binary: Binary::from_env(Self::BIN_VARIABLE, "opencode"),
        }
    }

    /// Runs this binary instead.
    pub fn program(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.binary = Binary(path.into());
        self
    }

    /// Registers the provider under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn run_command(&self, request: &AgentRequest) -> Result<AgentResponse, ProviderError> {
        let mut args: Vec<std::ffi::OsString> =
            vec!["run".into(), "--format".into(), "json".into()];
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
            program: self.binary.0.clone(),
            args,
            cwd: working_dir(request),
            stdin: None,
        };
        let mut session: Option<String> = None;
        let events = request.events.clone();
        let finished = process::run(invocation, |line| {
            if session.is_none() {
                session = text(line, "/sessionID").map(str::to_owned);
            }
            events.send(
                AgentEvent::new(line.clone())
                    .with_session_id(session.as_deref())
                    .with_action(action(line)),
            );
        })
        .await?;
        let parts: Vec<&Value> = finished
            .lines
            .iter()
            .filter_map(|line| line.get("part").map(|part| (line, part)))
            .filter(|(line, _)| text(line, "/type") == Some("step_finish"))
            .map(|(_, part)| part)
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
        if !finished.succeeded() || error.is_some() {
            let detail = error.map(error_detail);
            let message = match &detail {
                Some(detail) if finished.stderr.trim().is_empty() || finished.succeeded() => {
                    match finished.code {
                        Some(0) => format!("{DISPLAY} provider reported an error: {detail}"),
                        code => format!(
                            "{DISPLAY} provider exited with code {}: {detail}",
                            code.unwrap_or(-1)
                        ),
                    }
                }
                _ => finished.exit_message(),
            };
            return Err(classified(message, error, &finished.stderr, usage));
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
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidResponse,
                format!("{DISPLAY} provider finished without a final step_finish line"),
            ));
        }
        let session = session.ok_or_else(|| no_session(DISPLAY))?;
        let answer = finished
            .lines
            .iter()
            .rev()
            .find_map(|line| {
                (text(line, "/type") == Some("text"))
                    .then(|| text(line, "/part/text"))
                    .flatten()
            })
            .unwrap_or_default();
        let mut response = AgentResponse::new(Value::String(answer.to_owned()))
            .with_session_id(session)
            .with_raw(Value::Array(finished.lines.clone()));
        response.usage = usage;
        response.model = request.model().map(str::to_owned);
        Ok(response)
    }
}

impl Default for OpencodeProvider {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AgentProvider for OpencodeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let schema = request.options.get("schema").filter(|s| !s.is_null());
        if schema.is_some() || request.prompt.len() > LONGEST_ARGUMENT_PROMPT {
            server::run(&self.binary, &request).await
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

/// The error for a failed call: retryable when opencode says so or the status is a rate
/// limit or an overload.
fn classified(
    message: String,
    error: Option<&Value>,
    stderr: &str,
    usage: Option<smol_durable_core::Usage>,
) -> ProviderError {
    let data = error.and_then(|line| line.pointer("/error/data"));
    let status = data
        .and_then(|data| data.get("statusCode"))
        .and_then(Value::as_u64);
    let detail = error.map_or_else(|| stderr.to_owned(), error_detail);
    let error = failure(message, status, &detail, usage);
    if data
        .and_then(|data| data.get("isRetryable"))
        .and_then(Value::as_bool)
        == Some(true)
        && !error.is_retryable()
    {
        let mut retryable = ProviderError::transient(error.to_string());
        if let Some(usage) = error.usage() {
            retryable = retryable.with_usage(usage.clone());
        }
        return retryable;
    }
    error
}

/// A tool the agent uses.
fn action(line: &Value) -> Option<String> {
    (text(line, "/type") == Some("tool_use")).then(|| {
        tool_action(
            text(line, "/part/tool").unwrap_or("tool"),
            line.pointer("/part/state/input").unwrap_or(&Value::Null),
        )
    })
}
