//! `codex`: OpenAI Codex's `codex exec --json`.

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::process::working_dir;
use smol_durable_core::{
    AgentEvent, AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind,
};

use crate::answer::{count, output, text, Tokens};
use crate::process::{self, Invocation};
use crate::{failure, no_session, option, tool_action, Binary};

const DISPLAY: &str = "Codex";

/// Runs `codex exec [extra args] --skip-git-repo-check [--model M] --json
/// --output-last-message <file> [--output-schema <file>] -` with the prompt on stdin
/// (smol-wf's command line).
///
/// - `model` (no provider qualifier and no `thinking`, checked by the engine); a `schema` goes
///   to `--output-schema`, object schemas made strict as Codex requires
///   (`additionalProperties: false`, every property required).
/// - The session id is `thread.started`'s `thread_id`; the answer is the last-message file,
///   else the last `agent_message` item; usage is summed over `turn.completed` lines, where
///   `input_tokens` includes `cached_input_tokens` (cache writes:
///   `cache_write_input_tokens`). Codex prints no model and no cost: the model is the call's.
/// - `turn.failed`, a non-zero exit or no `turn.completed` fails the call; a 429 or an
///   overload in the message makes it retryable. An `error` line alone is a warning.
#[derive(Debug, Clone)]
pub struct CodexProvider {
    name: String,
    binary: Binary,
    extra_args: Vec<String>,
}

impl CodexProvider {
    /// The name scripts and the CLI select it by.
    pub const NAME: &'static str = "codex";

    /// The environment variable naming the `codex` binary (default: `codex` on `PATH`).
    pub const BIN_VARIABLE: &'static str = "SMOL_DURABLE_CODEX_BIN";

    /// A provider running `codex` from [`BIN_VARIABLE`](Self::BIN_VARIABLE) or `PATH`.
    pub fn new() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            binary: Binary::from_env(Self::BIN_VARIABLE, "codex"),
            extra_args: Vec::new(),
        }
    }

    /// Runs this binary instead.
    pub fn program(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.binary = Binary(path.into());
        self
    }

    /// Arguments placed right after `exec`, e.g. `["--sandbox", "workspace-write"]` to let
    /// the agent edit files.
    pub fn extra_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Registers the provider under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for CodexProvider {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AgentProvider for CodexProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let files = tempfile::Builder::new()
            .prefix("smol-durable-codex-")
            .tempdir()
            .map_err(|error| {
                ProviderError::terminal(format!(
                    "{DISPLAY} provider cannot make a temporary directory: {error}"
                ))
            })?;
        let last_message = files.path().join("last-message.txt");
        let mut args: Vec<std::ffi::OsString> = vec!["exec".into()];
        args.extend(self.extra_args.iter().map(Into::into));
        args.push("--skip-git-repo-check".into());
        if let Some(model) = option(&request, "model") {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend([
            "--json".into(),
            "--output-last-message".into(),
            last_message.clone().into_os_string(),
        ]);
        let schema = request.options.get("schema").filter(|s| !s.is_null());
        if let Some(schema) = schema {
            let path = files.path().join("schema.json");
            std::fs::write(&path, strict_schema(schema.clone()).to_string()).map_err(|error| {
                ProviderError::terminal(format!(
                    "{DISPLAY} provider cannot write the output schema: {error}"
                ))
            })?;
            args.extend(["--output-schema".into(), path.into_os_string()]);
        }
        args.push("-".into());
        let invocation = Invocation {
            display: DISPLAY,
            program: self.binary.0.clone(),
            args,
            cwd: working_dir(&request),
            stdin: Some(request.prompt.clone().into_bytes()),
        };
        let mut session: Option<String> = None;
        let events = request.events.clone();
        let finished = process::run(invocation, |line| {
            if text(line, "/type") == Some("thread.started") {
                session = text(line, "/thread_id").map(str::to_owned);
            }
            events.send(
                AgentEvent::new(line.clone())
                    .with_session_id(session.as_deref())
                    .with_action(action(line)),
            );
        })
        .await?;
        let mut tokens = Tokens::default();
        let mut completed = false;
        for turn in finished
            .lines
            .iter()
            .filter(|line| text(line, "/type") == Some("turn.completed"))
        {
            completed = true;
            let input = count(turn, "/usage/input_tokens");
            let cached = count(turn, "/usage/cached_input_tokens");
            tokens.add(Tokens {
                input: input.saturating_sub(cached),
                output: count(turn, "/usage/output_tokens"),
                cache_read: cached,
                cache_write: count(turn, "/usage/cache_write_input_tokens"),
                cost: None,
            });
        }
        let usage = completed.then(|| tokens.usage());
        let failed = finished
            .lines
            .iter()
            .rev()
            .find_map(|line| match text(line, "/type") {
                Some("turn.failed") => text(line, "/error/message"),
                Some("error") => text(line, "/message"),
                _ => None,
            });
        let turn_failed = finished
            .lines
            .iter()
            .any(|line| text(line, "/type") == Some("turn.failed"));
        if !finished.succeeded() {
            let message = match failed {
                Some(detail) if finished.stderr.trim().is_empty() => format!(
                    "{DISPLAY} provider exited with code {}: {detail}",
                    finished.code.unwrap_or(-1)
                ),
                _ => finished.exit_message(),
            };
            let detail = failed.map_or_else(|| finished.stderr.clone(), str::to_owned);
            return Err(failure(message, None, &detail, usage));
        }
        if turn_failed {
            let detail = failed.unwrap_or("turn failed");
            return Err(failure(
                format!("{DISPLAY} provider reported an error: {detail}"),
                None,
                detail,
                usage,
            ));
        }
        if !completed {
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidResponse,
                format!("{DISPLAY} provider finished without a turn.completed line"),
            ));
        }
        let session = session.ok_or_else(|| no_session(DISPLAY))?;
        let message = std::fs::read_to_string(&last_message)
            .ok()
            .filter(|text| !text.trim().is_empty())
            .or_else(|| {
                finished.lines.iter().rev().find_map(|line| {
                    (text(line, "/type") == Some("item.completed")
                        && text(line, "/item/type") == Some("agent_message"))
                    .then(|| text(line, "/item/text").map(str::to_owned))
                    .flatten()
                })
            })
            .unwrap_or_default();
        let mut response = AgentResponse::new(output(message, schema.is_some()))
            .with_session_id(session)
            .with_raw(Value::Array(finished.lines.clone()));
        response.usage = usage;
        response.model = request.model().map(str::to_owned);
        Ok(response)
    }
}

/// Codex's strict structured-output form: every object schema closed
/// (`additionalProperties: false`) with all its properties required, all the way down.
fn strict_schema(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        if let Some(Value::Object(properties)) = map.get("properties") {
            let names: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
            map.insert("required".to_owned(), Value::Array(names));
            map.insert("additionalProperties".to_owned(), Value::Bool(false));
        } else if map.get("type").and_then(Value::as_str) == Some("object") {
            map.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
        for (key, value) in map.iter_mut() {
            match key.as_str() {
                "properties" | "$defs" | "definitions" => {
                    if let Value::Object(children) = value {
                        for child in children.values_mut() {
                            *child = strict_schema(std::mem::take(child));
                        }
                    }
                }
                "items" | "additionalItems" => *value = strict_schema(std::mem::take(value)),
                "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                    if let Value::Array(children) = value {
                        for child in children.iter_mut() {
                            *child = strict_schema(std::mem::take(child));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    schema
}

/// What a started item does.
fn action(line: &Value) -> Option<String> {
    if text(line, "/type") != Some("item.started") {
        return None;
    }
    let item = line.get("item")?;
    match text(item, "/type")? {
        "command_execution" => Some(tool_action("shell", item)),
        "file_change" => {
            let path = item
                .pointer("/changes/0/path")
                .and_then(Value::as_str)
                .unwrap_or("files");
            Some(format!("edit: {path}"))
        }
        "mcp_tool_call" => Some(format!(
            "{}.{}",
            text(item, "/server").unwrap_or("mcp"),
            text(item, "/tool").unwrap_or("tool")
        )),
        "web_search" => Some(tool_action("search", item)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_schemas_are_made_strict_all_the_way_down() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}}
        }, "required": ["name"]});
        assert_eq!(
            strict_schema(schema),
            json!({"type": "object", "additionalProperties": false,
                "required": ["name", "tags"], "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                    "required": ["x"], "properties": {"x": {"type": "number"}}}}
            }})
        );
        assert_eq!(
            strict_schema(json!({"type": "string"})),
            json!({"type": "string"})
        );
    }

    #[test]
    fn started_commands_become_actions() {
        let line = json!({"type": "item.started", "item": {"id": "i1", "type": "command_execution",
            "command": "bash -lc ls", "status": "in_progress"}});
        assert_eq!(action(&line).as_deref(), Some("shell: bash -lc ls"));
    }
}
