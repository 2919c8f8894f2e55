//! `pi`: the pi coding agent's `pi --print --mode json`.

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable_core::process::working_dir;
use smol_durable_core::{AgentProvider, AgentRequest, AgentResponse, ProviderError, UsageCost};

use crate::answer::{count, schema, text, Tokens};
use crate::process::{self, Invocation, Watch};
use crate::{cli_provider, invalid, no_session, option, scratch_dir, tool_call};

const DISPLAY: &str = "Pi";

/// The tool a structured call's agent must call with its answer.
const RESULT_TOOL: &str = "workflow_result";

cli_provider! {
    /// Runs `pi [--extension <file>.ts] --print --mode json [--model M] [--thinking T]
    /// @<file>/prompt.md` (the prompt as a file reference; smol-wf's command line).
    ///
    /// - `model`, `thinking` → `--thinking`. A `schema` has no flag in pi: a generated extension
    ///   registers one tool, `workflow_result`, whose parameters are the schema (a non-object
    ///   schema wrapped as `{ value }`), the prompt asks the agent to call it once with its
    ///   answer, and the call's arguments are the answer. An agent that never calls it fails.
    /// - The session id is the `session` line's `id`; usage and cost are summed over the
    ///   assistant messages' `message_end` (`input`, `output`, `cacheRead`, `cacheWrite`,
    ///   `cost.*`); the model is theirs; the answer is the last assistant message's text.
    /// - The last assistant message's `stopReason: "error"` (with `errorMessage`) or
    ///   `"aborted"`, a non-zero exit or no `agent_end` fails the call (an earlier error that pi
    ///   recovered from by its own `auto_retry` does not); a rate limit or an overload in the
    ///   message is retryable.
    PiProvider {
        name: "pi",
        command: "pi",
        bin_variable: "SMOL_DURABLE_PI_BIN",
        args_variable: "SMOL_DURABLE_PI_ARGS",
        args_go: "placed before the provider's own",
    }
}

#[async_trait]
impl AgentProvider for PiProvider {
    fn name(&self) -> &str {
        &self.cli.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let files = scratch_dir(DISPLAY, "smol-durable-pi-")?;
        let write = |name: &str, content: &str| {
            let path = files.path().join(name);
            std::fs::write(&path, content)
                .map(|()| path)
                .map_err(|error| {
                    ProviderError::terminal(format!(
                        "{DISPLAY} provider cannot write {name}: {error}"
                    ))
                })
        };
        let schema = schema(&request);
        let wrapped = schema.is_some_and(|schema| !is_object_schema(schema));
        let mut args: Vec<std::ffi::OsString> = self.cli.extra_args()?;
        let mut prompt = request.prompt.clone();
        if let Some(schema) = schema {
            let parameters = if wrapped {
                json!({"type": "object", "properties": {"value": schema}, "required": ["value"]})
            } else {
                schema.clone()
            };
            let extension = write("workflow-result.ts", &extension(&parameters))?;
            args.extend(["--extension".into(), extension.into_os_string()]);
            prompt.push_str(&instructions(wrapped));
        }
        args.extend(["--print".into(), "--mode".into(), "json".into()]);
        if let Some(model) = option(&request, "model") {
            args.extend(["--model".into(), model.into()]);
        }
        if let Some(thinking) = option(&request, "thinking") {
            args.extend(["--thinking".into(), thinking.into()]);
        }
        let prompt_file = write("prompt.md", &prompt)?;
        let mut reference = std::ffi::OsString::from("@");
        reference.push(prompt_file.as_os_str());
        args.push(reference);
        let invocation = Invocation {
            display: DISPLAY,
            program: self.cli.program.clone(),
            args,
            cwd: working_dir(&request),
            stdin: None,
        };
        let watch = Watch {
            session: |line| {
                (text(line, "/type") == Some("session"))
                    .then(|| text(line, "/id"))
                    .flatten()
            },
            action,
        };
        let finished = process::run_watched(invocation, &request.events, watch).await?;
        let assistant: Vec<&Value> = finished
            .lines
            .iter()
            .filter(|line| {
                text(line, "/type") == Some("message_end")
                    && text(line, "/message/role") == Some("assistant")
            })
            .filter_map(|line| line.get("message"))
            .collect();
        let mut tokens = Tokens::default();
        for message in &assistant {
            tokens.add(message_tokens(message));
        }
        let usage = (!assistant.is_empty()).then(|| tokens.usage());
        // Only the last message decides: pi retries a failed model call by itself
        // (`auto_retry_start`), and an earlier error it recovered from is no failure.
        let failed = assistant
            .last()
            .and_then(|message| match text(message, "/stopReason") {
                Some("error") => Some(
                    text(message, "/errorMessage")
                        .unwrap_or("the model call failed")
                        .to_owned(),
                ),
                Some("aborted") => Some("the agent was aborted".to_owned()),
                _ => None,
            });
        if let Some(error) = finished.failure(failed.as_deref(), None, usage.clone()) {
            return Err(error);
        }
        if !finished
            .lines
            .iter()
            .any(|line| text(line, "/type") == Some("agent_end"))
        {
            return Err(invalid(
                format!("{DISPLAY} provider finished without an agent_end line"),
                usage,
            ));
        }
        let Some(session) = finished.session.clone() else {
            return Err(no_session(DISPLAY, usage));
        };
        let answer = match schema {
            Some(_) => {
                let called = finished.lines.iter().rev().find_map(|line| {
                    (text(line, "/type") == Some("tool_execution_start")
                        && text(line, "/toolName") == Some(RESULT_TOOL))
                    .then(|| line.get("args").cloned())
                    .flatten()
                });
                let Some(arguments) = called else {
                    return Err(invalid(
                        format!(
                            "{DISPLAY} provider: the agent finished without calling the \
                             {RESULT_TOOL} tool with its answer"
                        ),
                        usage,
                    ));
                };
                if wrapped {
                    arguments.get("value").cloned().unwrap_or(Value::Null)
                } else {
                    arguments
                }
            }
            None => Value::String(
                assistant
                    .last()
                    .map(|message| message_text(message))
                    .unwrap_or_default(),
            ),
        };
        let model = assistant
            .iter()
            .rev()
            .find_map(|message| text(message, "/model"))
            .or_else(|| request.model())
            .map(str::to_owned);
        let mut response = AgentResponse::new(answer)
            .with_session_id(session)
            .with_raw(Value::Array(finished.lines));
        response.usage = usage;
        response.model = model;
        Ok(response)
    }
}

fn is_object_schema(schema: &Value) -> bool {
    text(schema, "/type") == Some("object") || schema.get("properties").is_some()
}

/// The extension registering the result tool (plain JavaScript, which pi loads as TypeScript).
fn extension(parameters: &Value) -> String {
    format!(
        r#"// Generated by smol-durable for one structured agent call.
export default function (pi) {{
  pi.registerTool({{
    name: "{RESULT_TOOL}",
    label: "Workflow result",
    description: "Submit the final answer of this task. Call it exactly once, as your last action.",
    parameters: {parameters},
    async execute(_toolCallId, params) {{
      return {{ content: [{{ type: "text", text: "Result recorded. You are done." }}], details: params }};
    }},
  }});
}}
"#
    )
}

/// What the prompt of a structured call adds.
fn instructions(wrapped: bool) -> String {
    let shape = if wrapped {
        " Its answer is wrapped as { value }: pass the answer as the `value` argument."
    } else {
        ""
    };
    format!(
        "\n\nWhen you are done, call the `{RESULT_TOOL}` tool exactly once with your final \
         answer as its arguments.{shape}"
    )
}

/// One assistant message's usage and cost.
fn message_tokens(message: &Value) -> Tokens {
    let cost = message
        .pointer("/usage/cost")
        .filter(|cost| cost.is_object());
    Tokens {
        input: count(message, "/usage/input"),
        output: count(message, "/usage/output"),
        cache_read: count(message, "/usage/cacheRead"),
        cache_write: count(message, "/usage/cacheWrite"),
        cost: cost.map(|cost| {
            let part = |name: &str| cost.get(name).and_then(Value::as_f64);
            UsageCost {
                input: part("input"),
                output: part("output"),
                cache_read: part("cacheRead"),
                cache_write: part("cacheWrite"),
                ..UsageCost::usd(part("total").unwrap_or(0.0))
            }
        }),
    }
}

/// The text blocks of a message, joined.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|block| text(block, "/type") == Some("text"))
            .filter_map(|block| text(block, "/text"))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A tool the agent starts.
fn action(line: &Value) -> Option<String> {
    (text(line, "/type") == Some("tool_execution_start"))
        .then(|| tool_call(line, "/toolName", "/args"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_keep_their_breakdown() {
        let message = json!({"usage": {"input": 3, "output": 2, "cacheRead": 10, "cacheWrite": 1,
            "cost": {"input": 0.1, "output": 0.2, "cacheRead": 0.01, "cacheWrite": 0.02, "total": 0.33}}});
        let tokens = message_tokens(&message);
        assert_eq!(
            (
                tokens.input,
                tokens.output,
                tokens.cache_read,
                tokens.cache_write
            ),
            (3, 2, 10, 1)
        );
        let cost = tokens.cost.expect("cost");
        assert_eq!(
            (cost.input, cost.cache_write, cost.total),
            (Some(0.1), Some(0.02), 0.33)
        );
    }

    #[test]
    fn the_extension_carries_the_schema_as_parameters() {
        let source = extension(&json!({"type": "object", "properties": {"a": {"type": "number"}}}));
        assert!(source.contains(r#"name: "workflow_result""#), "{source}");
        assert!(
            source
                .contains(r#"parameters: {"properties":{"a":{"type":"number"}},"type":"object"}"#),
            "{source}"
        );
    }
}
