//! Running one agent CLI: spawn it in a process group of its own, hand it the prompt, read its
//! JSON lines as they arrive, and tell how it ended.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use smol_durable_core::process::ProcessGroupGuard;
use smol_durable_core::ProviderError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The most of a failed program's output an error message quotes (smol-wf's cut).
const QUOTED_OUTPUT_CHARS: usize = 4_000;

/// The most of stderr kept: agent CLIs can be chatty there.
const STDERR_BYTES: usize = 1 << 20;

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
}

impl Finished {
    /// Whether the program exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
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
        let code = self
            .code
            .map_or_else(|| "a signal".to_owned(), |code| code.to_string());
        format!(
            "{} provider exited with code {code}: {}",
            self.display,
            cut(output.trim(), QUOTED_OUTPUT_CHARS)
        )
    }
}

/// Runs the program to its end, calling `on_line` with each stdout line as soon as it is
/// printed. Dropping the returned future kills the program's whole process group.
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
    let mut group = ProcessGroupGuard::new(child.id());
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
        let mut kept = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr
                .take(STDERR_BYTES as u64)
                .read_to_end(&mut kept)
                .await;
        }
        String::from_utf8_lossy(&kept).into_owned()
    };
    let read_stdout = async {
        let mut lines = Vec::new();
        if let Some(stdout) = stdout {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let value = serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|_| Value::String(line.to_owned()));
                on_line(&value);
                lines.push(value);
            }
        }
        lines
    };
    let ((), stderr, lines) = tokio::join!(write, read_stderr, read_stdout);
    let status = child.wait().await.map_err(|error| {
        ProviderError::transient(format!(
            "{} provider did not finish: {error}",
            invocation.display
        ))
        .with_source(error)
    })?;
    group.disarm();
    Ok(Finished {
        display: invocation.display,
        code: status.code(),
        lines,
        stderr,
    })
}

/// `text` cut to `chars` characters.
pub(crate) fn cut(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}
