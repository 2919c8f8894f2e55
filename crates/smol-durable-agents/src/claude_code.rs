//! `claude-code`: Claude Code's `claude --print` in stream-JSON mode.

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::process::working_dir;
use smol_durable_core::{AgentProvider, AgentRequest, AgentResponse, ProviderError, UsageCost};

use crate::answer::{count, output, schema, text, Tokens};
use crate::process::{self, Invocation, Watch};
use crate::{cli_provider, invalid, no_session, option, tool_call};

const DISPLAY: &str = "Claude Code";

cli_provider! {
    /// Runs `claude [--model M] [--effort T] [--agent A] --output-format stream-json --verbose
    /// --input-format text [--json-schema S] --print` with the prompt on stdin (smol-wf's command
    /// line).
    ///
    /// - `model` (no provider qualifier, checked by the engine), `thinking` → `--effort`,
    ///   `agentType` → `--agent`; a `schema` goes to `--json-schema` and the answer is the
    ///   result's `structured_output`.
    /// - Reads `session_id`, the model from the `init` line, and from the final `result` line
    ///   the answer, `usage` (`input_tokens` excludes the cache; `cache_read_input_tokens`,
    ///   `cache_creation_input_tokens`) and `total_cost_usd` (`cost_usd` in older versions).
    /// - A result with `is_error`, an `error_*` subtype (even with `is_error: false`, as
    ///   `error_max_budget_usd` comes), a non-zero exit or no result line fails the call;
    ///   `api_error_status` 429 / 529 make it retryable.
    ClaudeCodeProvider {
        name: "claude-code",
        command: "claude",
        bin_variable: "SMOL_DURABLE_CLAUDE_BIN",
        args_variable: "SMOL_DURABLE_CLAUDE_ARGS",
        args_go: "placed before the provider's own, e.g. `--permission-mode acceptEdits`",
    }
}

impl ClaudeCodeProvider {
    fn invocation(&self, request: &AgentRequest) -> Result<Invocation, ProviderError> {
        let mut args: Vec<std::ffi::OsString> = self.cli.extra_args()?;
        for (flag, option_name) in [
            ("--model", "model"),
            ("--effort", "thinking"),
            ("--agent", "agentType"),
        ] {
            if let Some(value) = option(request, option_name) {
                args.extend([flag.into(), value.into()]);
            }
        }
        args.extend(
            [
                "--output-format",
                "stream-json",
                "--verbose",
                "--input-format",
                "text",
            ]
            .map(Into::into),
        );
        if let Some(schema) = schema(request) {
            args.extend(["--json-schema".into(), schema.to_string().into()]);
        }
        args.push("--print".into());
        Ok(Invocation {
            display: DISPLAY,
            program: self.cli.program.clone(),
            args,
            cwd: working_dir(request),
            stdin: Some(request.prompt.clone().into_bytes()),
        })
    }
}

#[async_trait]
impl AgentProvider for ClaudeCodeProvider {
    fn name(&self) -> &str {
        &self.cli.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let watch = Watch {
            session: |line| text(line, "/session_id"),
            action,
        };
        let finished =
            process::run_watched(self.invocation(&request)?, &request.events, watch).await?;
        let result = finished
            .lines
            .iter()
            .rev()
            .find(|line| text(line, "/type") == Some("result"));
        let usage = result.map(|result| tokens(result).usage());
        let status = result
            .and_then(|result| result.get("api_error_status"))
            .and_then(Value::as_u64);
        if let Some(error) = finished.failure(
            result.and_then(error_detail).as_deref(),
            status,
            usage.clone(),
        ) {
            return Err(error);
        }
        let Some(result) = result else {
            return Err(invalid(
                format!("{DISPLAY} provider finished without a result line"),
                None,
            ));
        };
        let Some(session) = finished.session.clone() else {
            return Err(no_session(DISPLAY, usage));
        };
        let structured = schema(&request).is_some();
        let answer = match result
            .get("structured_output")
            .or_else(|| result.get("structuredOutput"))
            .filter(|value| structured && !value.is_null())
        {
            Some(value) => value.clone(),
            None => output(
                text(result, "/result").unwrap_or_default().to_owned(),
                structured,
            ),
        };
        let model = finished
            .lines
            .iter()
            .find_map(|line| {
                (text(line, "/subtype") == Some("init"))
                    .then(|| text(line, "/model"))
                    .flatten()
            })
            .map(str::to_owned)
            .or_else(|| {
                result
                    .get("modelUsage")
                    .and_then(Value::as_object)
                    .and_then(|models| models.keys().next().cloned())
            })
            .or_else(|| request.model().map(str::to_owned));
        let mut response = AgentResponse::new(answer)
            .with_session_id(session)
            .with_raw(Value::Array(finished.lines));
        response.usage = usage;
        response.model = model;
        Ok(response)
    }
}

/// The result's usage and cost.
fn tokens(result: &Value) -> Tokens {
    Tokens {
        input: count(result, "/usage/input_tokens"),
        output: count(result, "/usage/output_tokens"),
        cache_read: count(result, "/usage/cache_read_input_tokens"),
        cache_write: count(result, "/usage/cache_creation_input_tokens"),
        cost: result
            .get("total_cost_usd")
            .or_else(|| result.get("cost_usd"))
            .and_then(Value::as_f64)
            .map(UsageCost::usd),
    }
}

/// Why a result line is an error (`subtype: detail`), or `None` for a success.
fn error_detail(result: &Value) -> Option<String> {
    let subtype = text(result, "/subtype").unwrap_or("error");
    let is_error = result.get("is_error").and_then(Value::as_bool) == Some(true);
    if !is_error && !subtype.starts_with("error") {
        return None;
    }
    let errors: Vec<String> = result
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|error| match error {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let detail = if errors.is_empty() {
        text(result, "/result").unwrap_or_default().to_owned()
    } else {
        errors.join("; ")
    };
    Some(match (subtype, detail.is_empty()) {
        (_, true) => subtype.to_owned(),
        // `success` with `is_error` (an API error Claude Code passed on): the text says it.
        ("success", false) => detail,
        (_, false) => format!("{subtype}: {detail}"),
    })
}

/// The last tool an assistant line calls.
fn action(line: &Value) -> Option<String> {
    if text(line, "/type") != Some("assistant") {
        return None;
    }
    line.pointer("/message/content")?
        .as_array()?
        .iter()
        .rev()
        .find(|block| text(block, "/type") == Some("tool_use"))
        .map(|block| tool_call(block, "/name", "/input"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_results_say_why() {
        let result = json!({"type": "result", "subtype": "error_max_turns", "is_error": true,
            "errors": ["Reached maximum number of turns (3)"]});
        assert_eq!(
            error_detail(&result).as_deref(),
            Some("error_max_turns: Reached maximum number of turns (3)")
        );
        let budget =
            json!({"type": "result", "subtype": "error_max_budget_usd", "is_error": false});
        assert_eq!(
            error_detail(&budget).as_deref(),
            Some("error_max_budget_usd")
        );
        let ok = json!({"type": "result", "subtype": "success", "is_error": false, "result": "x"});
        assert_eq!(error_detail(&ok), None);
    }

    #[test]
    fn tool_calls_become_actions() {
        let line = json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "Let me look"},
            {"type": "tool_use", "name": "Bash", "input": {"command": "cargo test\nmore"}}
        ]}});
        assert_eq!(action(&line).as_deref(), Some("Bash: cargo test"));
        assert_eq!(action(&json!({"type": "user"})), None);
    }
}
