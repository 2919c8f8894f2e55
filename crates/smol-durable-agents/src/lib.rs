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

/// What every CLI provider is configured with: the name scripts select it by, its binary (a
/// path set on the provider, else the environment variable read when the provider is made,
/// else the command looked up on `PATH`) and extra arguments (set on the provider, else
/// shell-quoted in the `…_ARGS` environment variable).
#[derive(Debug, Clone)]
struct CliSettings {
    name: String,
    program: PathBuf,
    /// The extra arguments, or why the environment variable could not be read as such: every
    /// call then fails saying so, rather than run without flags the user asked for.
    extra_args: Result<Vec<String>, String>,
}

impl CliSettings {
    fn from_env(name: &str, bin_variable: &str, args_variable: &str, command: &str) -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let extra_args = match var(args_variable) {
            None => Ok(Vec::new()),
            Some(args) => shlex::split(&args.to_string_lossy()).ok_or_else(|| {
                format!(
                    "{args_variable} is not a shell-quoted argument list (an unclosed quote?): {}",
                    args.to_string_lossy()
                )
            }),
        };
        Self {
            name: name.to_owned(),
            program: var(bin_variable).map_or_else(|| PathBuf::from(command), PathBuf::from),
            extra_args,
        }
    }

    /// The extra arguments, as `OsString`s.
    fn extra_args(&self) -> Result<Vec<std::ffi::OsString>, ProviderError> {
        match &self.extra_args {
            Ok(args) => Ok(args.iter().map(Into::into).collect()),
            Err(message) => Err(ProviderError::terminal(message.clone())),
        }
    }
}

/// A CLI provider's type: the struct (with the docs given), its `NAME`, `BIN_VARIABLE`,
/// `ARGS_VARIABLE`, `new()` and builder methods, and `Default`.
macro_rules! cli_provider {
    (
        $(#[$doc:meta])*
        $provider:ident {
            name: $name:literal,
            command: $command:literal,
            bin_variable: $bin:literal,
            args_variable: $args:literal,
            args_go: $placement:literal $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $provider {
            cli: $crate::CliSettings,
        }

        impl $provider {
            /// The name scripts and the CLI select it by.
            pub const NAME: &'static str = $name;

            #[doc = concat!(
                "The environment variable naming the `", $command,
                "` binary (default: `", $command, "` on `PATH`)."
            )]
            pub const BIN_VARIABLE: &'static str = $bin;

            #[doc = concat!(
                "The environment variable holding extra arguments (shell-quoted), ",
                $placement, "."
            )]
            pub const ARGS_VARIABLE: &'static str = $args;

            #[doc = concat!(
                "A provider running `", $command,
                "` from [`BIN_VARIABLE`](Self::BIN_VARIABLE) or `PATH`."
            )]
            pub fn new() -> Self {
                Self {
                    cli: $crate::CliSettings::from_env(
                        Self::NAME,
                        Self::BIN_VARIABLE,
                        Self::ARGS_VARIABLE,
                        $command,
                    ),
                }
            }

            /// Runs this binary instead.
            pub fn program(mut self, path: impl Into<std::path::PathBuf>) -> Self {
                self.cli.program = path.into();
                self
            }

            /// Arguments added to every command line (where: see
            /// [`ARGS_VARIABLE`](Self::ARGS_VARIABLE)), e.g. permission or sandbox flags;
            /// replaces those of the environment variable.
            pub fn extra_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
                self.cli.extra_args = Ok(args.into_iter().map(Into::into).collect());
                self
            }

            /// Registers the provider under another name.
            pub fn named(mut self, name: impl Into<String>) -> Self {
                self.cli.name = name.into();
                self
            }
        }

        impl Default for $provider {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}
pub(crate) use cli_provider;

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
        _ if mentions(&lower, "429")
            || lower.contains("rate limit")
            || lower.contains("rate_limit")
            || lower.contains("too many requests") =>
        {
            ProviderErrorKind::RateLimited {
                retry_after_ms: None,
            }
        }
        _ if mentions(&lower, "529") || lower.contains("overloaded") => {
            ProviderErrorKind::Transient
        }
        _ => ProviderErrorKind::Terminal,
    };
    let error = ProviderError::new(kind, message);
    match usage {
        Some(usage) => error.with_usage(usage),
        None => error,
    }
}

/// Whether `text` holds `word` on its own (not inside a longer number or id: a request id
/// `req_8a429f` is no rate limit).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The error for an answer without a session id, which every call must have (billing what
/// the call spent).
fn no_session(display: &str, usage: Option<Usage>) -> ProviderError {
    invalid(format!("{display} provider returned no session id"), usage)
}

/// An answer the provider cannot use, billing what it cost.
fn invalid(message: String, usage: Option<Usage>) -> ProviderError {
    let error = ProviderError::new(ProviderErrorKind::InvalidResponse, message);
    match usage {
        Some(usage) => error.with_usage(usage),
        None => error,
    }
}

/// A temporary directory for the files a CLI reads or writes beside its arguments (the
/// prompt, the schema, the answer), readable by this user only; removed when dropped.
fn scratch_dir(display: &str, prefix: &str) -> Result<tempfile::TempDir, ProviderError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    let private = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(0o700)
    };
    #[cfg(unix)]
    builder.permissions(private);
    builder.tempdir().map_err(|error| {
        ProviderError::terminal(format!(
            "{display} provider cannot make a temporary directory: {error}"
        ))
    })
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

/// [`tool_action`] of a tool call event: the tool's name at `name_at`, its input at
/// `input_at` (JSON pointers).
fn tool_call(event: &serde_json::Value, name_at: &str, input_at: &str) -> String {
    tool_action(
        answer::text(event, name_at).unwrap_or("tool"),
        event.pointer(input_at).unwrap_or(&serde_json::Value::Null),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_arguments_variable_fails_every_call_saying_so() {
        let settings = CliSettings {
            name: "x".into(),
            program: "x".into(),
            extra_args: Ok(vec!["--sandbox".into(), "workspace write".into()]),
        };
        assert_eq!(
            settings.extra_args().expect("args"),
            ["--sandbox", "workspace write"].map(std::ffi::OsString::from)
        );
        let variable = "SMOL_DURABLE_TEST_ONLY_ARGS";
        std::env::set_var(variable, "--flag 'unclosed");
        let settings = CliSettings::from_env("x", "SMOL_DURABLE_TEST_ONLY_BIN", variable, "x");
        std::env::remove_var(variable);
        let error = settings.extra_args().expect_err("unclosed quote");
        assert!(
            error
                .to_string()
                .starts_with("SMOL_DURABLE_TEST_ONLY_ARGS is not a shell-quoted argument list"),
            "{error}"
        );
        assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    }

    #[test]
    fn only_rate_limits_and_overloads_are_retryable() {
        let kind = |detail: &str| failure(String::new(), None, detail, None).kind();
        let limited = ProviderErrorKind::RateLimited {
            retry_after_ms: None,
        };
        assert_eq!(kind("API Error: 429 rate limited"), limited);
        assert_eq!(kind("429 Too Many Requests"), limited);
        assert_eq!(kind("exceeded retry limit, last status: 429"), limited);
        assert_eq!(
            kind("API Error: 529 Overloaded"),
            ProviderErrorKind::Transient
        );
        assert_eq!(
            kind("request req_8a429f failed"),
            ProviderErrorKind::Terminal
        );
        assert_eq!(kind("read 15290 bytes"), ProviderErrorKind::Terminal);
        assert_eq!(kind("model not found"), ProviderErrorKind::Terminal);
        let status = |status: u64| failure(String::new(), Some(status), "", None).kind();
        assert_eq!(status(429), limited);
        assert_eq!(status(503), ProviderErrorKind::Transient);
        assert_eq!(status(400), ProviderErrorKind::Terminal);
    }
}
