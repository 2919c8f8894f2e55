//! The `command` provider: any program that reads a request on stdin and answers on stdout
//! becomes an agent, which is how agent CLIs plug in.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::process::{working_dir, ProcessGroupGuard};
use crate::{AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind};

/// The exit status (`EX_TEMPFAIL`) by which a command says "try again later".
pub const EXIT_TEMPORARY_FAILURE: i32 = 75;

/// Runs a program once per agent call.
///
/// The request goes to the program's stdin as one JSON object (`prompt`, `options`,
/// `context`, `runId`, `stepId`, and `attempt`: the step's fence, under its 0.1.0 name). The
/// program answers on stdout with a JSON object holding `output` and optionally `sessionId`,
/// `model`, `usage` (`{inputTokens, outputTokens}`) and `raw`; anything else on stdout (plain text, or JSON
/// without `output`) is the output itself, as text with one trailing newline removed.
///
/// The program runs in the call's working directory (see [`working_dir`]). A non-zero exit
/// fails the call with the program's stderr; exit status 75 (`EX_TEMPFAIL`)
/// and a timeout are retryable, any other failure is terminal. The program is killed when
/// the call times out or the run is cancelled.
///
/// ```no_run
/// use std::time::Duration;
/// use smol_durable_core::CommandProvider;
///
/// let provider = CommandProvider::new("my-agent", ["--json"]).timeout(Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
pub struct CommandProvider {
    name: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl CommandProvider {
    /// The name scripts and the CLI select it by, unless renamed.
    pub const NAME: &'static str = "command";

    /// A provider running `program` with `args`; ten-minute timeout.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: Self::NAME.to_owned(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(600),
        }
    }

    /// Calls taking longer are killed and fail (retryably).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Registers the provider under another name (several commands in one engine).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn call(&self, request: &AgentRequest) -> Result<AgentResponse, ProviderError> {
        let input = serde_json::to_vec(request).map_err(|error| {
            ProviderError::terminal(format!("cannot encode the request: {error}"))
        })?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = working_dir(request) {
            command.current_dir(dir);
        }
        // Its own process group, so a timeout or a cancellation also stops whatever the
        // program started (`sh -c …`, `npx …` wrappers).
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|error| {
            ProviderError::terminal(format!("cannot start {}: {error}", self.program))
                .with_source(error)
        })?;
        let mut group = ProcessGroupGuard::new(child.id());
        let stdin = child.stdin.take();
        // Written while the output is read: a large request and a large answer must not wait
        // on each other's pipe.
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A program that answers without reading its input closes the pipe early.
                let _ = stdin.write_all(&input).await;
            }
        };
        let ((), output) = tokio::join!(write, child.wait_with_output());
        group.disarm();
        let output = output.map_err(|error| {
            ProviderError::transient(format!("{} did not finish: {error}", self.program))
                .with_source(error)
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = format!(
                "{} failed ({}): {}",
                self.program,
                output.status,
                stderr.trim()
            );
            return Err(if output.status.code() == Some(EXIT_TEMPORARY_FAILURE) {
                ProviderError::transient(message)
            } else {
                ProviderError::terminal(message)
            });
        }
        response(&output.stdout)
    }
}

/// stdout as a response: a JSON object with `output`, or the text itself.
fn response(stdout: &[u8]) -> Result<AgentResponse, ProviderError> {
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(stdout) {
        if fields.contains_key("output") {
            let mut response = serde_json::from_value::<AgentResponse>(Value::Object(fields))
                .map_err(|error| {
                    ProviderError::new(
                        ProviderErrorKind::InvalidResponse,
                        format!("the command's JSON answer is malformed: {error}"),
                    )
                })?;
            if let Some(usage) = response.usage.as_mut() {
                if usage.total_tokens.is_none() {
                    usage.total_tokens = usage
                        .input_tokens
                        .zip(usage.output_tokens)
                        .map(|(i, o)| i.saturating_add(o));
                }
            }
            return Ok(response);
        }
    }
    let text = String::from_utf8_lossy(stdout);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(AgentResponse::new(Value::String(text.to_owned())))
}

#[async_trait]
impl AgentProvider for CommandProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        match tokio::time::timeout(self.timeout, self.call(&request)).await {
            Ok(result) => result,
            // Dropping the call killed the program.
            Err(_) => Err(ProviderError::transient(format!(
                "{} took longer than {} s and was stopped",
                self.program,
                self.timeout.as_secs_f64()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProviderErrorKind, Usage};
    use serde_json::json;

    fn sh(script: &str) -> CommandProvider {
        CommandProvider::new("sh", ["-c", script])
    }

    #[tokio::test]
    async fn the_request_arrives_on_stdin_and_json_answers_are_read() {
        let provider = sh(
            r#"read -r line; printf '{"output": {"seen": %s}, "model": "m", "usage": {"inputTokens": 2, "outputTokens": 3}, "sessionId": "s1"}' "$line""#,
        );
        let mut request = AgentRequest::new("hi");
        request.run_id = "run_1".into();
        request.step_id = "step_1".into();
        let response = provider.run(request).await.expect("answers");
        assert_eq!(response.output["seen"]["prompt"], json!("hi"));
        assert_eq!(response.output["seen"]["runId"], json!("run_1"));
        assert_eq!(response.output["seen"]["stepId"], json!("step_1"));
        assert_eq!(response.output["seen"]["attempt"], json!(1));
        assert_eq!(response.model.as_deref(), Some("m"));
        assert_eq!(response.session_id.as_deref(), Some("s1"));
        assert_eq!(response.usage, Some(Usage::tokens(2, 3)));
    }

    #[tokio::test]
    async fn plain_text_and_json_without_output_are_text() {
        let response = sh("cat > /dev/null; echo 'just text'")
            .run(AgentRequest::new("x"))
            .await
            .expect("answers");
        assert_eq!(response.output, json!("just text"));
        let response = sh(r#"cat > /dev/null; printf '{"answer": 1}'"#)
            .run(AgentRequest::new("x"))
            .await
            .expect("answers");
        assert_eq!(response.output, json!("{\"answer\": 1}"));
    }

    #[tokio::test]
    async fn large_requests_and_answers_do_not_block_each_other() {
        let prompt = "x".repeat(300_000);
        let response = CommandProvider::new("cat", Vec::<String>::new())
            .timeout(Duration::from_secs(20))
            .run(AgentRequest::new(prompt.clone()))
            .await
            .expect("cat echoes the request");
        let echoed: Value =
            serde_json::from_str(response.output.as_str().expect("text")).expect("the request");
        assert_eq!(echoed["prompt"], json!(prompt));
    }

    #[tokio::test]
    async fn a_json_answer_with_a_malformed_field_is_an_invalid_response() {
        let error = sh(r#"cat > /dev/null; printf '{"output": "x", "usage": "lots"}'"#)
            .run(AgentRequest::new("x"))
            .await
            .expect_err("malformed");
        assert_eq!(error.kind(), ProviderErrorKind::InvalidResponse);
    }

    #[tokio::test]
    async fn failures_carry_stderr_and_say_whether_to_retry() {
        let error = sh("echo 'model exploded' >&2; exit 3")
            .run(AgentRequest::new("x"))
            .await
            .expect_err("fails");
        assert_eq!(error.kind(), ProviderErrorKind::Terminal);
        assert!(error.to_string().contains("model exploded"), "{error}");
        let error = sh("echo 'rate limited' >&2; exit 75")
            .run(AgentRequest::new("x"))
            .await
            .expect_err("fails");
        assert_eq!(error.kind(), ProviderErrorKind::Transient);
        let error = CommandProvider::new("/nonexistent/agent", Vec::<String>::new())
            .run(AgentRequest::new("x"))
            .await
            .expect_err("fails");
        assert!(
            error
                .to_string()
                .contains("cannot start /nonexistent/agent"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("smol-durable-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let marker = dir.join("finished");
        // The work happens in a grandchild: the whole process group must go.
        let provider = sh(&format!("(sleep 1; touch {}) & wait", marker.display()))
            .timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let error = provider
            .run(AgentRequest::new("x"))
            .await
            .expect_err("times out");
        assert_eq!(error.kind(), ProviderErrorKind::Transient);
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(!marker.exists(), "the program was killed, not left running");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
