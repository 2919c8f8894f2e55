//! [`AgentProvider`]s that run the coding-agent CLIs smol-workflows users already drive:
//! [Claude Code](ClaudeCodeProvider) (`claude`), [Codex](CodexProvider) (`codex`),
//! [opencode](OpencodeProvider) and [pi](PiProvider).
//!
//! ```no_run
//! # fn main() -> Result<(), smol_durable_core::Error> {
//! use std::sync::Arc;
//! use smol_durable_agents::{ClaudeCodeProvider, CodexProvider};
//! use smol_durable_core::{Engine, MemoryStore};
//!
//! let builder = Engine::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     // `claude` on PATH, or SMOL_DURABLE_CLAUDE_BIN
//!     .provider(Arc::new(ClaudeCodeProvider::new()))
//!     // `codex` on PATH, or SMOL_DURABLE_CODEX_BIN
//!     .provider(Arc::new(CodexProvider::new()));
//! # Ok(())
//! # }
//! ```
//!
//! Every provider runs its CLI once per call, in the call's working directory (the
//! workflow's, or its worktree under `isolation: "worktree"`), in a process group of its own
//! that is killed when the call times out (`timeoutMs`) or the run is cancelled. Each line the
//! CLI prints becomes a `workflow.agent_event` as it arrives, with a one-line summary of the
//! agent's action for progress displays. The final answer, the session id (required), the
//! model and the usage — input, output, cache reads and writes, and the cost in US dollars when
//! the CLI reports one — come from the CLI's own JSON. A call with a `schema` asks the CLI for
//! structured output through its native mechanism. Failures carry smol-wf's message
//! (`<Provider> provider exited with code N: …`); rate limits and overloads are retryable,
//! everything else is terminal.
#![deny(missing_docs)]

mod answer;
mod claude_code;
mod codex;
mod opencode;
mod pi;
mod process;

use std::path::PathBuf;
use std::sync::Arc;

use smol_durable_core::{AgentProvider, ProviderError, ProviderErrorKind, Usage};

pub use claude_code::ClaudeCodeProvider;
pub use codex::CodexProvider;
pub use opencode::OpencodeProvider;
pub use pi::PiProvider;

/// The names the providers are registered under (smol-wf's `--agent-provider` values).
pub const NAMES: [&str; 4] = [
    ClaudeCodeProvider::NAME,
    CodexProvider::NAME,
    OpencodeProvider::NAME,
    PiProvider::NAME,
];

/// Every provider of this crate, each finding its CLI the default way (its environment
/// variable, else `PATH`).
pub fn all() -> Vec<Arc<dyn AgentProvider>> {
    vec![
        Arc::new(ClaudeCodeProvider::new()),
        Arc::new(CodexProvider::new()),
        Arc::new(OpencodeProvider::new()),
        Arc::new(PiProvider::new()),
    ]
}

/// Where a provider finds its CLI: a path set on the provider, else the environment variable
/// (read when the provider is made), else the command name looked up on `PATH`.
#[derive(Debug, Clone)]
struct Binary(PathBuf);

impl Binary {
    fn from_env(variable: &str, command: &str) -> Self {
        Self(
            std::env::var_os(variable)
                .filter(|path| !path.is_empty())
                .map_or_else(|| PathBuf::from(command), PathBuf::from),
        )
    }
}

/// A failure the CLI reported: rate limits and overloads may pass and are retried (when the
/// call's retry policy allows); anything else is terminal. `status` is an HTTP status the CLI
/// passed on, `detail` its message.
fn failure(
    message: String,
    status: Option<u64>,
    detail: &str,
    usage: Option<Usage>,
) -> ProviderError {
    let lower = detail.to_lowercase();
    let kind = match status {
        Some(429) => ProviderErrorKind::RateLimited {
            retry_after_ms: None,
        },
        Some(500 | 502 | 503 | 504 | 529) => ProviderErrorKind::Transient,
        _ if lower.contains("429")
            || lower.contains("rate limit")
            || lower.contains("rate_limit") =>
        {
            ProviderErrorKind::RateLimited {
                retry_after_ms: None,
            }
        }
        _ if lower.contains("529") || lower.contains("overloaded") => ProviderErrorKind::Transient,
        _ => ProviderErrorKind::Terminal,
    };
    let error = ProviderError::new(kind, message);
    match usage {
        Some(usage) => error.with_usage(usage),
        None => error,
    }
}

/// The error for an answer without a session id, which every call must have.
fn no_session(display: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidResponse,
        format!("{display} provider returned no session id"),
    )
}

/// A string option of the call.
fn option<'a>(request: &'a smol_durable_core::AgentRequest, name: &str) -> Option<&'a str> {
    request
        .options
        .get(name)
        .and_then(serde_json::Value::as_str)
}

/// A one-line summary of a tool call for progress displays: the tool and its most telling
/// argument (a command, a path, a pattern).
fn tool_action(tool: &str, input: &serde_json::Value) -> String {
    let argument = [
        "command",
        "file_path",
        "filePath",
        "path",
        "pattern",
        "url",
        "query",
        "description",
    ]
    .iter()
    .find_map(|key| input.get(key).and_then(serde_json::Value::as_str));
    match argument {
        Some(argument) => format!("{tool}: {}", one_line(argument)),
        None => tool.to_owned(),
    }
}

/// The first line of `text`, at most 120 characters.
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let cut = process::cut(line, 120);
    if cut.len() < line.len() {
        format!("{cut}…")
    } else {
        cut.to_owned()
    }
}
