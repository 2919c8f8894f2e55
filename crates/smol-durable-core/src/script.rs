//! The script engine contract: evaluate a workflow module, forwarding its host calls.
//!
//! The engine knows nothing about durability. It turns `agent(...)`, `sleep(...)`,
//! `workflow(...)`, `log(...)` and `phase(...)` into [`HostRequest`]s on the
//! [`WorkflowHost`] it is given, and resolves the script's promises with the answers.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ScriptError;

/// A workflow script: where it lives and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSource {
    /// Path of the script (real, or a logical name for sources registered in memory). Relative
    /// child references resolve against its directory.
    pub path: PathBuf,
    /// The source text.
    pub text: String,
}

impl WorkflowSource {
    /// A source held in memory under a logical path.
    pub fn inline(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads a script from disk.
    pub fn from_file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref();
        Ok(Self {
            path: path.to_path_buf(),
            text: std::fs::read_to_string(path)?,
        })
    }

    /// Content hash (BLAKE3, hex) under which the source is stored.
    pub fn content_hash(&self) -> String {
        blake3::hash(self.text.as_bytes()).to_hex().to_string()
    }
}

/// One phase declared in `meta.phases`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseMeta {
    /// Phase name as used with `phase(name)`.
    pub title: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Default model for agents in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Default provider for agents in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// `export const meta = {...}`, read without running the script.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowMeta {
    /// Workflow name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// When to pick it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_to_use: Option<String>,
    /// Declared phases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseMeta>,
}

impl WorkflowMeta {
    /// Metadata with a name and description.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            ..Self::default()
        }
    }

    /// Adds a phase.
    pub fn with_phase(mut self, phase: PhaseMeta) -> Self {
        self.phases.push(phase);
        self
    }

    /// The declared phase named `title`.
    pub fn phase(&self, title: &str) -> Option<&PhaseMeta> {
        self.phases.iter().find(|phase| phase.title == title)
    }
}

impl PhaseMeta {
    /// A phase with defaults.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Sets the default model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the default provider.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }
}

/// A call from the script to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum HostRequest {
    /// `agent(prompt, options?)`; resolves to the provider's output.
    Agent {
        /// Prompt.
        prompt: String,
        /// Options as written (object or null).
        options: Value,
        /// The phase current where the call was made: the last `phase()` of the calling
        /// branch (each `parallel` thunk and `pipeline` item is a branch of its own, starting
        /// with its parent's phase). The engine inserts it as `options.phase` when the options
        /// have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
    },
    /// `sleep(ms)`; resolves to null.
    Sleep {
        /// Milliseconds, already validated and rounded up by the engine.
        duration_ms: u64,
    },
    /// `workflow(ref, args?)`; resolves to the child's result.
    Workflow {
        /// `{"scriptPath": "./x.mjs"}` or a name, as written.
        reference: Value,
        /// Arguments.
        args: Value,
    },
    /// `waitFor(name, options?)` or `waitForAny(names, options?)`: resolves to the signal's
    /// payload (`waitFor`) or `{name, value}` (`waitForAny`); on timeout to the `default`
    /// option when the options have one, else rejects with
    /// [`HostErrorKind::WaitTimeout`].
    Wait {
        /// The names waited for, as given.
        names: Vec<String>,
        /// `{timeoutMs?, deadline?, schema?, description?, default?}` (object or null); a
        /// present `default` key, even `null`, means the options have a default.
        options: Value,
        /// `waitForAny`: answer with `{name, value}`.
        any: bool,
    },
    /// `signal(runId, name, payload)`: sends a signal to another run, once; resolves to the
    /// receipt `{signalId, duplicate, delivered}`.
    Signal {
        /// The run to signal.
        run_id: String,
        /// The signal's name.
        name: String,
        /// Its payload (`null` when none was given).
        payload: Value,
    },
    /// `log(...values)`; resolves at once.
    Log {
        /// The values logged.
        values: Vec<Value>,
    },
    /// `phase(name, options?)`: reported as a `workflow.phase` event; resolves at once. The
    /// script engine tracks which phase is current and passes it with each
    /// [`HostRequest::Agent`].
    Phase {
        /// Phase name.
        name: String,
        /// The second argument, when one was given (`undefined` arrives as `null`).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        options: Option<Value>,
    },
}

/// A field that is present is `Some`, even when it holds `null` (serde's `Option` would read a
/// present `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Why a host call was rejected; the script sees an `Error` with this message.
///
/// A rejection that stands for a typed failure (a provider error, an exhausted budget, a schema
/// mismatch, a failed child run) carries a [`rejection_id`](Self::rejection_id). A script engine
/// remembers which script error object each such rejection became; when that very object
/// escapes the script uncaught (rethrown or never caught), the engine reports the id with
/// [`ScriptError::with_rejection_id`](crate::ScriptError::with_rejection_id), so the run fails
/// with the typed error instead of a generic "the script threw".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct HostError {
    /// What happened.
    pub kind: HostErrorKind,
    /// Message for the script.
    pub message: String,
    /// Names the typed failure behind this rejection, to the host that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_id: Option<u64>,
}

/// Kind of [`HostError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HostErrorKind {
    /// The run is cancelled.
    Cancelled,
    /// No budget left.
    BudgetExhausted,
    /// The provider call failed.
    Provider,
    /// Bad arguments.
    Invalid,
    /// A child workflow failed.
    Workflow,
    /// The durable machinery failed (store, fencing, signature mismatch); fatal for the run.
    Durability,
    /// A wait's deadline passed without a signal (the script sees an error named
    /// `WaitTimeoutError`).
    WaitTimeout,
}

impl HostError {
    /// A new rejection.
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            rejection_id: None,
        }
    }

    /// The same rejection, naming the typed failure behind it.
    pub fn with_rejection_id(mut self, id: u64) -> Self {
        self.rejection_id = Some(id);
        self
    }
}

/// The answer to a host call, produced later.
pub type HostFuture = Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send + 'static>>;

/// The run's budget as scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSnapshot {
    /// Allowance in output tokens, if any.
    pub total: Option<u64>,
    /// Spent so far.
    pub spent: u64,
}

impl BudgetSnapshot {
    /// What remains (`None` = unlimited, `Infinity` in JS).
    pub fn remaining(&self) -> Option<u64> {
        self.total.map(|total| total.saturating_sub(self.spent))
    }
}

/// Where in a script a host call was made: `file:line:column` (1-based), the innermost frame
/// of the workflow's own code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSite {
    /// The script file (or module) path.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What the core offers a running script.
///
/// [`WorkflowHost::call`] does its bookkeeping (occurrence numbering, current phase)
/// synchronously, in the order calls are made, and returns a future for the answer; engines
/// must call it at the moment the script makes the call, not when they first poll, so step
/// identity stays deterministic.
pub trait WorkflowHost: Send + Sync + fmt::Debug {
    /// Makes a host call.
    fn call(&self, request: HostRequest) -> HostFuture;

    /// [`call`](Self::call), saying where in the script the call was made. Engines that can
    /// tell call this instead when [`wants_call_sites`](Self::wants_call_sites) says so; the
    /// default ignores the site.
    fn call_at(&self, request: HostRequest, site: Option<CallSite>) -> HostFuture {
        let _ = site;
        self.call(request)
    }

    /// Whether this host uses call sites (finding one costs the engine a stack walk per call;
    /// an offline replay reports them in a divergence). The default: no.
    fn wants_call_sites(&self) -> bool {
        false
    }

    /// Whether every call is answered without the script doing anything more (an offline
    /// replay answers from its recording). An engine whose answers arrive asynchronously may
    /// then wait for each one before the script goes on, so the script sees its answers in
    /// call order, as an engine that polls each call once sees ready answers. The default: no.
    fn answers_at_once(&self) -> bool {
        false
    }

    /// The budget now.
    fn budget(&self) -> BudgetSnapshot;
}

/// Everything an engine needs to evaluate one workflow.
#[derive(Debug, Clone)]
pub struct ScriptInvocation {
    /// The module.
    pub source: WorkflowSource,
    /// `args` (deep read-only in the script).
    pub args: Value,
    /// Where host calls go.
    pub host: Arc<dyn WorkflowHost>,
    /// Fires when the run is cancelled; the engine should stop the script promptly.
    pub cancel: CancellationToken,
    /// The run being evaluated (`runId` in the script): a root run's id, or a child run's.
    pub run_id: String,
    /// The longest `sleep(ms)` the script may ask for
    /// ([`Limits::max_sleep_ms`](crate::Limits::max_sleep_ms)): a longer one throws at once,
    /// in the script, where the call was made.
    pub max_sleep_ms: u64,
}

/// Evaluates workflow scripts.
#[async_trait]
pub trait ScriptEngine: Send + Sync + fmt::Debug {
    /// Reads `meta` without executing anything.
    fn read_metadata(&self, source: &WorkflowSource) -> Result<WorkflowMeta, ScriptError>;

    /// Runs the module to completion and returns its default export as JSON (`undefined` →
    /// `null`). A script awaiting something that can never settle fails with
    /// [`ScriptErrorKind::Deadlock`](crate::ScriptErrorKind::Deadlock).
    async fn evaluate(&self, invocation: ScriptInvocation) -> Result<Value, ScriptError>;
}
