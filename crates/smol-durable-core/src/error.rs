//! Error types. Each carries a kind that says whether retrying can help; tests assert kinds,
//! user-facing messages are fixed only where SPEC fixes them.

use std::error::Error as StdError;
use std::fmt;

/// A boxed driver or I/O error kept as the `source` of ours.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong in a store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The row asked for does not exist.
    NotFound,
    /// A uniqueness rule or compare-and-set failed in a way the caller did not expect.
    Conflict,
    /// The caller no longer holds the lease it acted under.
    LeaseLost,
    /// The database is unreachable, locked or overloaded; retrying may help.
    Unavailable,
    /// A stored row is malformed (invalid JSON, impossible values).
    Corrupt,
    /// The store cannot do what was asked (version too new, missing capability).
    Unsupported,
    /// Anything else.
    Other,
}

/// Whether an error may go away when the operation is tried again (after OpenDAL's
/// `ErrorStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStatus {
    /// Trying again cannot help.
    Permanent,
    /// Trying again may help (a lost connection, a locked or overloaded database).
    Temporary,
    /// It was temporary, but the retries it was given are used up: nothing retries it again.
    Persistent,
}

/// An error from a [`DurableStore`](crate::DurableStore) operation.
///
/// Cheap to clone: the driver error it keeps as its `source` is shared.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    // Borrowed for the operations of this process; owned when read back from a stored reason.
    operation: std::borrow::Cow<'static, str>,
    message: String,
    persistent: bool,
    #[source]
    source: Option<std::sync::Arc<dyn StdError + Send + Sync + 'static>>,
}

impl StoreError {
    /// A new error of `kind` raised by `operation` (e.g. `"complete_step"`).
    pub fn new(kind: StoreErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            operation: std::borrow::Cow::Borrowed(operation),
            message: message.into(),
            persistent: false,
            source: None,
        }
    }

    /// An error read back from a stored failure reason.
    pub(crate) fn recorded(kind: StoreErrorKind, operation: String, message: String) -> Self {
        Self {
            kind,
            operation: std::borrow::Cow::Owned(operation),
            message,
            persistent: false,
            source: None,
        }
    }

    /// Attaches the underlying driver error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(std::sync::Arc::from(source.into()));
        self
    }

    /// The same error, reported by another operation (e.g. each job of a failed shared
    /// transaction), keeping kind, status and source.
    pub fn reported_by(&self, operation: &'static str) -> Self {
        Self {
            operation: std::borrow::Cow::Borrowed(operation),
            ..self.clone()
        }
    }

    /// Marks a temporary error whose retries are used up ([`ErrorStatus::Persistent`]), or one
    /// that can only recur (a writer that stopped).
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The operation that failed.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The message, without the operation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again may help: only [`StoreErrorKind::Unavailable`] errors are
    /// temporary, until they are marked [`persistent`](Self::persistent).
    pub fn status(&self) -> ErrorStatus {
        match (self.kind, self.persistent) {
            (StoreErrorKind::Unavailable, false) => ErrorStatus::Temporary,
            (StoreErrorKind::Unavailable, true) => ErrorStatus::Persistent,
            _ => ErrorStatus::Permanent,
        }
    }

    /// Whether retrying the operation may succeed ([`ErrorStatus::Temporary`]).
    pub fn is_retryable(&self) -> bool {
        self.status() == ErrorStatus::Temporary
    }
}

/// How a provider call failed, which decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// Rate limited; retry after the hint if any.
    RateLimited {
        /// Suggested wait in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// A temporary failure (network, 5xx, timeout).
    Transient,
    /// Retrying will not help (bad request, refused, auth).
    Terminal,
    /// The provider answered with something unusable.
    InvalidResponse,
}

impl ProviderErrorKind {
    /// The kind's name in stored failure reasons and events: `rate_limited`, `transient`,
    /// `terminal`, `invalid_response`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderErrorKind::RateLimited { .. } => "rate_limited",
            ProviderErrorKind::Transient => "transient",
            ProviderErrorKind::Terminal => "terminal",
            ProviderErrorKind::InvalidResponse => "invalid_response",
        }
    }
}

/// An error from an [`AgentProvider`](crate::AgentProvider).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    kind: ProviderErrorKind,
    message: String,
    // Boxed: errors travel in `Result`s on hot paths; usage is rare and large.
    usage: Option<Box<crate::Usage>>,
    #[source]
    source: Option<BoxError>,
}

impl ProviderError {
    /// A new error.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            usage: None,
            source: None,
        }
    }

    /// A retryable failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Transient, message)
    }

    /// A failure retrying cannot fix.
    pub fn terminal(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Terminal, message)
    }

    /// Usage the failed call consumed; it is billed to the run's budget.
    pub fn with_usage(mut self, usage: crate::Usage) -> Self {
        self.usage = Some(Box::new(usage));
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> ProviderErrorKind {
        self.kind
    }

    /// Usage consumed by the failed call, if reported.
    pub fn usage(&self) -> Option<&crate::Usage> {
        self.usage.as_deref()
    }

    /// Whether a per-call retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::RateLimited { .. } | ProviderErrorKind::Transient
        )
    }

    /// How long the provider asked to wait before the next try, when it said.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self.kind {
            ProviderErrorKind::RateLimited { retry_after_ms } => retry_after_ms,
            _ => None,
        }
    }
}

/// How a script failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScriptErrorKind {
    /// The source does not parse.
    Syntax,
    /// The script threw (or a host call it did not catch rejected).
    Thrown,
    /// The script awaits something that can never settle.
    Deadlock,
    /// A resource limit (time, memory, depth, output size) was hit.
    Limit,
    /// The run was cancelled while the script ran.
    Cancelled,
    /// `meta` or the default export is missing or malformed.
    Metadata,
    /// An import that is not allowed or cannot be found.
    Import,
    /// The engine itself failed.
    Internal,
}

/// An error from a [`ScriptEngine`](crate::ScriptEngine).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ScriptError {
    kind: ScriptErrorKind,
    message: String,
    location: Option<String>,
    rejection_id: Option<u64>,
}

impl ScriptError {
    /// A new error.
    pub fn new(kind: ScriptErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            location: None,
            rejection_id: None,
        }
    }

    /// The script threw `message`.
    pub fn thrown(message: impl Into<String>) -> Self {
        Self::new(ScriptErrorKind::Thrown, message)
    }

    /// The script awaits a promise that can never settle.
    pub fn deadlock(detail: impl Into<String>) -> Self {
        Self::new(ScriptErrorKind::Deadlock, detail)
    }

    /// Where in the script (`file:line:col`).
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> ScriptErrorKind {
        self.kind
    }

    /// The message without location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `file:line:col`, when known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// Says that what failed the script is the rejection of a host call, escaped uncaught: the
    /// very error object the host's [`HostError`](crate::HostError) became, with that error's
    /// [`rejection_id`](crate::HostError::rejection_id). The engine then fails the run with the
    /// typed error behind that rejection (a provider failure, an exhausted budget …) instead of
    /// a generic script error.
    pub fn with_rejection_id(mut self, id: u64) -> Self {
        self.rejection_id = Some(id);
        self
    }

    /// The host rejection that escaped the script, when that is what failed it.
    pub fn rejection_id(&self) -> Option<u64> {
        self.rejection_id
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ScriptErrorKind::Deadlock {
            write!(f, "deadlock: {}", self.message)?;
        } else {
            f.write_str(&self.message)?;
        }
        if let Some(location) = &self.location {
            write!(f, " (at {location})")?;
        }
        Ok(())
    }
}

/// What kind of failure an [`Error`] is, for code that handles failures by kind rather than
/// by variant. Stored with a failed run as the `kind` of its failure reason (snake case:
/// `"budget_exhausted"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The run asked for does not exist.
    NotFound,
    /// The request is malformed or does not fit (builder misuse, an unknown provider, a
    /// child run where a root run is needed, a script that is gone).
    InvalidRequest,
    /// The run is in a state that forbids the operation.
    InvalidState,
    /// The run was cancelled.
    Cancelled,
    /// The run stopped without failing: handed back (released, parked).
    Stopped,
    /// The budget allows no more agent calls.
    BudgetExhausted,
    /// An agent's output did not match its `schema`, corrective try included.
    SchemaMismatch,
    /// A resource limit (time, memory, depth, result or prompt size) was hit.
    Limit,
    /// The workflow changed in a way that alters a recorded call.
    SignatureMismatch,
    /// A stored row holds something this version does not understand.
    Unsupported,
    /// Another owner holds the run, or took it over.
    Busy,
    /// The script failed.
    Script,
    /// A provider call failed.
    Provider,
    /// The store failed.
    Store,
    /// A child workflow failed or could not start.
    Workflow,
    /// A rule of the engine itself broke (a bug), or a task it ran died.
    Internal,
}

/// The error of an [`Engine`](crate::Engine) operation or of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `resume`/`status` named a run the store does not have.
    #[error("workflow run {run_id} was not found in {store}; check --db")]
    RunNotFound {
        /// The id asked for.
        run_id: String,
        /// The store's description (a path or URL without credentials).
        store: String,
    },
    /// The run was cancelled.
    #[error("workflow cancelled")]
    Cancelled,
    /// A worker shutting down handed the run back unfinished; another worker continues it.
    #[error("workflow released unfinished: its worker shut down; another worker continues it")]
    Released,
    /// Only long sleeps or waits remained, so the worker handed the run back until the
    /// earliest of them ends (a signal for a wait makes it due at once); any worker resumes it
    /// then, by replay.
    #[error("workflow parked until {until} (epoch ms): only sleeps or waits remained; any worker resumes it then, or when a signal arrives")]
    Parked {
        /// When the earliest sleep or wait deadline ends (`i64::MAX`: only waits without a
        /// deadline remain).
        until: i64,
    },
    /// The run was started (or resumed) to detach at its first wait, and did: it waits for a
    /// signal, parked; a signal makes it due for any worker, or resume it.
    #[error("workflow detached at a wait: it waits for a signal {}; a signal with --resume, a resume or any worker continues it", until_text(*until))]
    Detached {
        /// The wait's deadline (`i64::MAX`: none).
        until: i64,
    },
    /// The budget allows no more agent calls.
    #[error("budget exhausted: spent {spent} of {total} output tokens")]
    BudgetExhausted {
        /// Output tokens spent.
        spent: u64,
        /// The allowance.
        total: u64,
    },
    /// An agent's output did not match its `schema`, also after the corrective try.
    #[error("{message}")]
    SchemaMismatch {
        /// smol-wf's text: `Structured output did not match JSON Schema: <path> <problem>; …`.
        message: String,
    },
    /// A step's stored signature differs from the replaying call's.
    #[error("durable step input signature mismatch for {checkpoint}: the workflow changed in a way that alters an already recorded call")]
    SignatureMismatch {
        /// Checkpoint name of the step.
        checkpoint: String,
    },
    /// A stored step holds a state or kind this version does not understand.
    #[error("unsupported step {what} {value:?} in stored step {step_id} ({checkpoint})")]
    Unsupported {
        /// `kind` or `state`.
        what: &'static str,
        /// The stored value.
        value: String,
        /// The step.
        step_id: String,
        /// Checkpoint name of the step.
        checkpoint: String,
    },
    /// This process lost the lease it was acting under to another owner.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// Another live owner holds the run and waiting was not allowed (or timed out).
    #[error("workflow run {run_id} is held by {owner} until {lease_expires_at}; try again after its lease expires")]
    RunBusy {
        /// The run.
        run_id: String,
        /// The owner holding it.
        owner: String,
        /// Lease expiry (epoch ms).
        lease_expires_at: i64,
    },
    /// The script failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// A provider call failed and the script did not catch it.
    #[error("agent call failed: {0}")]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is malformed or does not fit: builder misuse, an unknown provider, a child
    /// run where a root run is needed, a script that is gone.
    #[error("{0}")]
    InvalidRequest(String),
    /// The run is in a state that forbids the operation.
    #[error("workflow run {run_id} is {state} and cannot be {operation}")]
    InvalidState {
        /// The run.
        run_id: String,
        /// Its state.
        state: crate::store::State,
        /// What was refused, as a past participle ("started again").
        operation: &'static str,
    },
    /// A rule of the engine itself broke (a bug), or a task it ran died; `source` says why.
    #[error("internal error: {message}")]
    Internal {
        /// What broke.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure read back from a stored run whose details this version does not rebuild
    /// into their own variant (see [`Error::from_failure_reason`]); it keeps the stored kind.
    #[error("{message}")]
    Recorded {
        /// The stored kind.
        kind: ErrorKind,
        /// The stored message.
        message: String,
    },
    /// A child workflow could not be started or failed.
    #[error("{message}")]
    Workflow {
        /// What happened, naming the child's script.
        message: String,
        /// Why the child failed, when it ran and failed (its own typed error).
        #[source]
        cause: Option<Box<Error>>,
    },
}

/// "until <time>" for a deadline, "without a deadline" for `i64::MAX`.
fn until_text(until: i64) -> String {
    if until == i64::MAX {
        "without a deadline".to_owned()
    } else {
        format!("until {}", crate::clock::rfc3339_ms(until))
    }
}

impl Error {
    /// A broken internal rule or a dead task, with its cause.
    pub fn internal(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Self::Internal {
            message: message.into(),
            source,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::RunNotFound { .. } => ErrorKind::NotFound,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Released | Error::Parked { .. } | Error::Detached { .. } => ErrorKind::Stopped,
            Error::BudgetExhausted { .. } => ErrorKind::BudgetExhausted,
            Error::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            Error::SignatureMismatch { .. } => ErrorKind::SignatureMismatch,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::LeaseLost(_) | Error::RunBusy { .. } => ErrorKind::Busy,
            Error::Script(script) => match script.kind() {
                ScriptErrorKind::Limit => ErrorKind::Limit,
                ScriptErrorKind::Cancelled => ErrorKind::Cancelled,
                _ => ErrorKind::Script,
            },
            Error::Provider(_) => ErrorKind::Provider,
            Error::Store(_) => ErrorKind::Store,
            Error::InvalidRequest(_) => ErrorKind::InvalidRequest,
            Error::InvalidState { .. } => ErrorKind::InvalidState,
            Error::Internal { .. } => ErrorKind::Internal,
            Error::Workflow { .. } => ErrorKind::Workflow,
            Error::Recorded { kind, .. } => *kind,
        }
    }

    /// A child workflow failed or could not start, without a typed cause.
    pub fn workflow(message: impl Into<String>) -> Self {
        Self::Workflow {
            message: message.into(),
            cause: None,
        }
    }

    /// Whether retrying the whole operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_retryable(),
            Error::Provider(error) => error.is_retryable(),
            Error::Workflow {
                cause: Some(cause), ..
            } => cause.is_retryable(),
            Error::RunBusy { .. } | Error::LeaseLost(_) => true,
            _ => false,
        }
    }
}

/// An uncaught host rejection fails the script with the rejection's message, as an uncaught
/// rejected promise does in JavaScript.
impl From<crate::HostError> for ScriptError {
    fn from(error: crate::HostError) -> Self {
        let kind = if error.kind == crate::HostErrorKind::Cancelled {
            ScriptErrorKind::Cancelled
        } else {
            ScriptErrorKind::Thrown
        };
        let script = Self::new(kind, error.message);
        match error.rejection_id {
            Some(id) => script.with_rejection_id(id),
            None => script,
        }
    }
}

/// A failed [`Engine::run`](crate::Engine::run): the error, and the run it failed (to resume,
/// inspect or delete it), unless it failed before the run was created.
#[derive(Debug)]
pub struct RunError {
    run_id: Option<String>,
    error: Error,
}

impl RunError {
    /// `error`, which failed run `run_id` (`None`: before the run was created).
    pub fn new(run_id: Option<String>, error: Error) -> Self {
        Self { run_id, error }
    }

    /// The run that failed, if it was created.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// What failed it.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// What failed it, by value.
    pub fn into_error(self) -> Error {
        self.error
    }

    /// [`Error::kind`] of what failed it.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// [`Error::is_retryable`] of what failed it.
    pub fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl StdError for RunError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

impl From<RunError> for Error {
    fn from(error: RunError) -> Self {
        error.error
    }
}
