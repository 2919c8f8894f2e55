//! `codex`: OpenAI Codex's `codex exec --json`.

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::process::working_dir;
use smol_durable_core::{AgentProvider, AgentRequest, AgentResponse, ProviderError};

use crate::answer::{count, output, schema, text, Tokens};
use crate::process::{self, Invocation, Watch};
use crate::{cli_provider, invalid, no_session, option, scratch_dir, tool_action};

const DISPLAY: &str = "Codex";

cli_provider! {
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
    CodexProvider {
        name: "codex",
        command: "codex",
        bin_variable: "SMOL_DURABLE_CODEX_BIN",
        args_variable: "SMOL_DURABLE_CODEX_ARGS",
        args_go: "placed right after `exec`, e.g. `--sandbox workspace-write` to let the agent edit files",
    }
}

#[async_trait]
impl AgentProvider for CodexProvider {
    fn name(&self) -> &str {
        &self.cli.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let files = scratch_dir(DISPLAY, "smol-durable-codex-")?;
        let last_message = files.path().join("last-message.txt");
        let mut args: Vec<std::ffi::OsString> = vec!["exec".into()];
        args.extend(self.cli.extra_args()?);
        args.push("--skip-git-repo-check".into());
        if let Some(model) = option(&request, "model") {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend([
            "--json".into(),
            "--output-last-message".into(),
            last_message.clone().into_os_string(),
        ]);
        let schema = schema(&request);
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
            program: self.cli.program.clone(),
            args,
            cwd: working_dir(&request),
            stdin: Some(request.prompt.clone().into_bytes()),
        };
        let watch = Watch {
            session: |line| {
                (text(line, "/type") == Some("thread.started"))
                    .then(|| text(line, "/thread_id"))
                    .flatten()
            },
            action,
        };
        let finished = process::run_watched(invocation, &request.events, watch).await?;
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
        // A failed turn ends the call; an `error` line alone is a warning, unless the CLI
        // then exits with an error.
        let turn_failed = finished.lines.iter().rev().find_map(|line| {
            (text(line, "/type") == Some("turn.failed"))
                .then(|| text(line, "/error/message").unwrap_or("turn failed"))
        });
        let last_error = finished.lines.iter().rev().find_map(|line| {
            (text(line, "/type") == Some("error"))
                .then(|| text(line, "/message"))
                .flatten()
        });
        let detail = match (turn_failed, finished.succeeded()) {
            (Some(detail), _) => Some(detail),
            (None, false) => last_error,
            (None, true) => None,
        };
        if let Some(error) = finished.failure(detail, None, usage.clone()) {
            return Err(error);
        }
        if !completed {
            return Err(invalid(
                format!("{DISPLAY} provider finished without a turn.completed line"),
                None,
            ));
        }
        let Some(session) = finished.session.clone() else {
            return Err(no_session(DISPLAY, usage));
        };
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
            .with_raw(Value::Array(finished.lines));
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
