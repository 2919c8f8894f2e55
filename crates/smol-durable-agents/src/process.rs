//! Running one agent CLI: spawn it in a process group of its own, hand it the prompt, read its
//! JSON lines as they arrive, and tell how it ended.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use smol_durable_core::process::ProcessGroupGuard;
use smol_durable_core::{AgentEvent, AgentEvents, ProviderError, Usage};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The most of a failed program's output an error message quotes (smol-wf's cut).
const QUOTED_OUTPUT_CHARS: usize = 4_000;

/// The most of stderr kept: agent CLIs can be chatty there.
const STDERR_BYTES: usize = 1 << 20;

/// How long the output is read after the program exited, for what it printed last.
const PIPE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// One run of an agent CLI.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// How errors name the provider (`Claude Code`, `Codex`, …).
    pub display: &'static str,
    /// The binary, as resolved by [`crate::Binary`].
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where it runs.
    pub cwd: Option<PathBuf>,
    /// Written to its stdin, which is then closed; `None`: stdin is empty.
    pub stdin: Option<Vec<u8>>,
}

/// How the program ended: its exit code, the lines it printed (JSON, or a string for a line
/// that is not), and its stderr.
#[derive(Debug)]
pub(crate) struct Finished {
    pub display: &'static str,
    pub code: Option<i32>,
    pub lines: Vec<Value>,
    pub stderr: String,
    /// The session id, as [`Watch::session`] found it.
    pub session: Option<String>,
}

/// How a CLI's lines are read while it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    /// The session id a line carries, if any (the first one found is the call's).
    pub session: fn(&Value) -> Option<&str>,
    /// What a line says the agent does, for progress displays.
    pub action: fn(&Value) -> Option<String>,
}

impl Finished {
    /// Whether the program exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    /// How the call failed, if it did: a non-zero exit is `<Provider> provider exited with
    /// code N: <stderr>` (or `detail`, the CLI's own reason, when stderr is empty); an exit 0
    /// with a `detail` is `<Provider> provider reported an error: <detail>`. Rate limits and
    /// overloads are retryable (see [`crate::failure`]); `usage` is billed.
    pub fn failure(
        &self,
        detail: Option<&str>,
        status: Option<u64>,
        usage: Option<Usage>,
    ) -> Option<ProviderError> {
        let (message, reason) = if self.succeeded() {
            let detail = detail?;
            (
                format!("{} provider reported an error: {detail}", self.display),
                detail.to_owned(),
            )
        } else {
            match detail {
                Some(detail) if self.stderr.trim().is_empty() => (
                    format!(
                        "{} provider exited with code {}: {detail}",
                        self.display,
                        self.code_text()
                    ),
                    detail.to_owned(),
                ),
                _ => (
                    self.exit_message(),
                    detail.map_or_else(|| self.stderr.clone(), str::to_owned),
                ),
            }
        };
        Some(crate::failure(message, status, &reason, usage))
    }

    fn code_text(&self) -> String {
        self.code
            .map_or_else(|| "a signal".to_owned(), |code| code.to_string())
    }

    /// smol-wf's message for a failed program: `<Provider> provider exited with code N:
    /// <stderr, else stdout, cut to 4 000 characters>`.
    pub fn exit_message(&self) -> String {
        let stderr = self.stderr.trim();
        let output = if stderr.is_empty() {
            self.lines
                .iter()
                .map(|line| match line {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            stderr.to_owned()
        };
        format!(
            "{} provider exited with code {}: {}",
            self.display,
            self.code_text(),
            cut(output.trim(), QUOTED_OUTPUT_CHARS)
        )
    }
}

/// Runs the program to its end, calling `on_line` with each stdout line as soon as it is
/// printed. Dropping the returned future kills the program's whole process group, and so does
/// the program's exit (what it left running in the group is stopped).
pub(crate) async fn run(
    invocation: Invocation,
    mut on_line: impl FnMut(&Value),
) -> Result<Finished, ProviderError> {
    let mut command = tokio::process::Command::new(&invocation.program);
    command
        .args(&invocation.args)
        .stdin(if invocation.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &invocation.cwd {
        command.current_dir(cwd);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|error| {
        ProviderError::terminal(format!(
            "{} provider could not start {}: {error}",
            invocation.display,
            invocation.program.display()
        ))
        .with_source(error)
    })?;
    let mut group = Some(ProcessGroupGuard::new(child.id()));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Written while the output is read: a long prompt and a chatty agent must not wait on
    // each other's pipe.
    let write = async move {
        if let (Some(mut pipe), Some(input)) = (stdin, invocation.stdin) {
            // A program that exits without reading its input closes the pipe early.
            let _ = pipe.write_all(&input).await;
        }
    };
    let read_stderr = async move {
        match stderr {
            Some(stderr) => read_capped(stderr, STDERR_BYTES).await,
            None => String::new(),
        }
    };
    let mut lines = Vec::new();
    let (status, stderr) = {
        let read_stdout = async {
            if let Some(stdout) = stdout {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    // A line that is not UTF-8 is kept, with replacement characters.
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let value = serde_json::from_str::<Value>(text)
                        .unwrap_or_else(|_| Value::String(text.to_owned()));
                    on_line(&value);
                    lines.push(value);
                }
            }
        };
        let output = async { tokio::join!(write, read_stderr, read_stdout).1 };
        tokio::pin!(output);
        let mut stderr_text = None;
        let status = tokio::select! {
            stderr = &mut output => {
                stderr_text = Some(stderr);
                child.wait().await
            }
            status = child.wait() => status,
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                return Err(ProviderError::transient(format!(
                    "{} provider did not finish: {error}",
                    invocation.display
                ))
                .with_source(error))
            }
        };
        // The program is done: what it left running in its group (a dev server, a language
        // server) goes with it, which also closes the pipes they held.
        drop(group.take());
        let stderr = match stderr_text {
            Some(stderr) => stderr,
            // Whatever still holds the pipes escaped the group: stop reading after a moment.
            None => tokio::time::timeout(PIPE_GRACE, &mut output)
                .await
                .unwrap_or_default(),
        };
        (status, stderr)
    };
    Ok(Finished {
        display: invocation.display,
        code: status.code(),
        lines,
        stderr,
        session: None,
    })
}

/// [`run`], reporting each line to `events` as it arrives with the session id and the action
/// `watch` finds.
pub(crate) async fn run_watched(
    invocation: Invocation,
    events: &AgentEvents,
    watch: Watch,
) -> Result<Finished, ProviderError> {
    let mut session: Option<String> = None;
    let mut finished = run(invocation, |line| {
        if session.is_none() {
            session = (watch.session)(line).map(str::to_owned);
        }
        events.send(
            AgentEvent::new(line.clone())
                .with_session_id(session.as_deref())
                .with_action((watch.action)(line)),
        );
    })
    .await?;
    finished.session = session;
    Ok(finished)
}

/// A program's output read to the end — a full pipe would stall the program, a closed one
/// kill it with EPIPE — keeping the first `cap` bytes.
pub(crate) async fn read_capped(mut pipe: impl tokio::io::AsyncRead + Unpin, cap: usize) -> String {
    let mut kept = Vec::new();
    let mut chunk = [0_u8; 8192];
    while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// `text` cut to `chars` characters.
pub(crate) fn cut(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}
