//! The isolated engine mode: each evaluation runs in a child process with resource limits.
//! (Long, but one thing: both ends of the parent–child protocol, kept side by side.)
//!
//! boa cannot pre-empt running JavaScript, and a few native paths can exhaust memory or the
//! stack before boa's own limits trip. [`IsolatedEngine`] therefore runs each workflow's
//! JavaScript in a child process that enforces a CPU-time limit (`RLIMIT_CPU`) and a memory
//! limit (`RLIMIT_AS`) on itself before it evaluates anything, and speaks the same
//! request/answer protocol as the in-process engine over its stdin and stdout, one JSON object
//! per line:
//!
//! - parent → child: `{"type":"start", …}` once, then `{"type":"answer","id":…,"result":…}`
//!   for every host call;
//! - child → parent: `{"type":"call","id":…,"request":…}` for every host call, in the order
//!   the script makes them, and `{"type":"done","result":…}` at the end.
//!
//! A child that exceeds a limit is killed by the kernel (or aborts), and the run fails with a
//! [`ScriptErrorKind::Limit`] error naming the limit; the host process never notices beyond
//! that. A cancelled run's child is killed when the evaluation is dropped. The child starts
//! with an empty environment: a script needs none, and the parent's may hold API keys.
//!
//! The child is any program that calls [`serve_script_host`]: this crate ships one
//! (`smol-durable-script-host`), and the `smol-durable` CLI serves it as a hidden subcommand of
//! itself, so host applications can do the same with their own binary.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smol_durable_core::{
    BudgetSnapshot, CallSite, HostError, HostErrorKind, HostFuture, HostRequest, ScriptEngine,
    ScriptError, ScriptErrorKind, ScriptInvocation, WorkflowHost, WorkflowMeta, WorkflowSource,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::BoaEngine;

/// Resource limits of each isolated evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct IsolationLimits {
    /// CPU time the script's process may use, in seconds (default 60). Time spent waiting for
    /// agent calls, sleeps or child workflows uses none.
    pub cpu_seconds: u64,
    /// Address space of the script's process, in bytes (default 2 GiB).
    pub memory_bytes: u64,
    /// Largest result (JSON text) the script may return, and largest message it may send
    /// (default 16 MiB); the engine's own `Limits` still apply after that.
    pub max_output_bytes: usize,
}

impl Default for IsolationLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 60,
            memory_bytes: 2 * 1024 * 1024 * 1024,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }
}

impl IsolationLimits {
    /// Sets the CPU-time limit.
    pub fn cpu_seconds(mut self, seconds: u64) -> Self {
        self.cpu_seconds = seconds;
        self
    }

    /// Sets the memory limit.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the output limit.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }
}

/// A [`ScriptEngine`] that evaluates each workflow in a child process with resource limits
/// (the child is any program that calls [`serve_script_host`]).
///
/// ```no_run
/// use std::sync::Arc;
/// use smol_durable_boa::{IsolatedEngine, IsolationLimits};
///
/// // A program whose main calls `smol_durable_boa::serve_script_host()`.
/// let engine = IsolatedEngine::new("/usr/local/bin/smol-durable-script-host")
///     .limits(IsolationLimits::default().cpu_seconds(10));
/// let engine: Arc<dyn smol_durable_core::ScriptEngine> = Arc::new(engine);
/// ```
#[derive(Debug, Clone)]
pub struct IsolatedEngine {
    program: PathBuf,
    args: Vec<OsString>,
    limits: IsolationLimits,
    in_process: BoaEngine,
}

impl IsolatedEngine {
    /// Runs scripts in `program` (started with no arguments), which must serve the protocol
    /// with [`serve_script_host`].
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            limits: IsolationLimits::default(),
            in_process: BoaEngine::new(),
        }
    }

    /// Arguments for the program (e.g. the hidden subcommand that serves the protocol).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the resource limits.
    pub fn limits(mut self, limits: IsolationLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The JavaScript settings the child uses (`max_sleep_ms`, `loop_iteration_limit`).
    pub fn javascript(mut self, engine: BoaEngine) -> Self {
        self.in_process = engine;
        self
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ToChild {
    Start {
        path: PathBuf,
        text: String,
        args: Value,
        budget: BudgetSnapshot,
        limits: IsolationLimits,
        #[serde(default)]
        run_id: String,
        max_sleep_ms: u64,
        loop_iteration_limit: u64,
        /// The parent's host reads call sites.
        #[serde(default)]
        call_sites: bool,
        /// The parent's host answers every call at once: wait for each answer.
        #[serde(default)]
        answers_at_once: bool,
    },
    Answer {
        id: u64,
        result: Result<Value, HostError>,
        budget: BudgetSnapshot,
    },
}

/// A [`ScriptError`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    message: String,
    location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejection_id: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum FromChild {
    Call {
        id: u64,
        request: HostRequest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<CallSite>,
    },
    Done {
        result: Result<Value, WireError>,
    },
}

const KINDS: [(ScriptErrorKind, &str); 8] = [
    (ScriptErrorKind::Syntax, "syntax"),
    (ScriptErrorKind::Thrown, "thrown"),
    (ScriptErrorKind::Deadlock, "deadlock"),
    (ScriptErrorKind::Limit, "limit"),
    (ScriptErrorKind::Cancelled, "cancelled"),
    (ScriptErrorKind::Metadata, "metadata"),
    (ScriptErrorKind::Import, "import"),
    (ScriptErrorKind::Internal, "internal"),
];

impl From<&ScriptError> for WireError {
    fn from(error: &ScriptError) -> Self {
        let kind = KINDS
            .iter()
            .find(|(kind, _)| *kind == error.kind())
            .map_or("internal", |(_, name)| name);
        Self {
            kind: kind.to_owned(),
            message: error.message().to_owned(),
            location: error.location().map(str::to_owned),
            rejection_id: error.rejection_id(),
        }
    }
}

impl From<WireError> for ScriptError {
    fn from(wire: WireError) -> Self {
        let kind = KINDS
            .iter()
            .find(|(_, name)| *name == wire.kind)
            .map_or(ScriptErrorKind::Internal, |(kind, _)| *kind);
        let mut error = ScriptError::new(kind, wire.message);
        if let Some(location) = wire.location {
            error = error.with_location(location);
        }
        if let Some(id) = wire.rejection_id {
            error = error.with_rejection_id(id);
        }
        error
    }
}

fn internal(message: impl Into<String>) -> ScriptError {
    ScriptError::new(ScriptErrorKind::Internal, message)
}

fn limit(message: impl Into<String>) -> ScriptError {
    ScriptError::new(ScriptErrorKind::Limit, message)
}

/// Reads one line of at most `max` bytes; `Ok(None)` at the end of the stream.
async fn read_line_at_most<R>(reader: &mut R, max: usize) -> Result<Option<String>, ScriptError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    let read = reader
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|error| internal(format!("cannot read from the script process: {error}")))?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() > max {
        return Err(limit(format!(
            "the workflow sent a message larger than the {max}-byte output limit"
        )));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| internal("the script process sent invalid UTF-8"))
}

/// Why the child ended without an answer, from its exit status.
fn exit_error(status: std::process::ExitStatus, limits: &IsolationLimits) -> ScriptError {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGABRT: i32 = 6;
        const SIGKILL: i32 = 9;
        const SIGXCPU: i32 = 24;
        // Only the limits this process set are `Limit` errors (which are not retried); a kill
        // from outside (the machine's OOM killer, an operator) or a crash may not repeat.
        match status.signal() {
            Some(SIGXCPU) => {
                return limit(format!(
                    "the workflow's JavaScript was stopped: it used more than its CPU time \
                     limit of {} s (IsolationLimits::cpu_seconds)",
                    limits.cpu_seconds
                ))
            }
            Some(SIGABRT) => {
                return limit(format!(
                    "the workflow's JavaScript process ran out of memory (limit {} bytes, \
                     IsolationLimits::memory_bytes) or stack",
                    limits.memory_bytes
                ))
            }
            Some(SIGKILL) => {
                return internal(
                    "the script process was killed (SIGKILL: the machine ran out of memory, or \
                     someone killed it)",
                )
            }
            Some(signal) => return internal(format!("the script process died of signal {signal}")),
            None => {}
        }
    }
    internal(format!(
        "the script process exited ({status}) without finishing the workflow"
    ))
}

#[async_trait]
impl ScriptEngine for IsolatedEngine {
    fn read_metadata(&self, source: &WorkflowSource) -> Result<WorkflowMeta, ScriptError> {
        // A literal parser that runs nothing: safe in this process.
        self.in_process.read_metadata(source)
    }

    async fn evaluate(&self, invocation: ScriptInvocation) -> Result<Value, ScriptError> {
        let ScriptInvocation {
            source,
            args,
            host,
            run_id,
            max_sleep_ms,
            ..
        } = invocation;
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            // A script has no use for the environment, and API keys live there.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                internal(format!(
                    "cannot start the script process {}: {error}",
                    self.program.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(internal("the script process has no pipes"));
        };
        let start = ToChild::Start {
            path: source.path,
            text: source.text,
            args,
            budget: host.budget(),
            limits: self.limits,
            run_id,
            max_sleep_ms,
            loop_iteration_limit: self.in_process.loop_iteration_limit,
            call_sites: host.wants_call_sites(),
            answers_at_once: host.answers_at_once(),
        };
        send(&mut stdin, &start).await?;
        // Reading and writing run on tasks of their own: a read is never cut off halfway by
        // an answer becoming ready, and neither side's pipe filling up can stall the other.
        // Both end with the evaluation (dropped channels, or aborted with it).
        let (messages, mut from_child) = tokio::sync::mpsc::unbounded_channel();
        // A message carries at most a result or a prompt, plus its envelope.
        let max_message = self.limits.max_output_bytes.saturating_add(64 * 1024);
        let reader = AbortOnDrop(tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout);
            loop {
                let message = read_line_at_most(&mut stdout, max_message).await;
                let last = !matches!(message, Ok(Some(_)));
                if messages.send(message).is_err() || last {
                    return;
                }
            }
        }));
        let (answers, mut to_child) = tokio::sync::mpsc::unbounded_channel::<ToChild>();
        let writer = AbortOnDrop(tokio::spawn(async move {
            while let Some(answer) = to_child.recv().await {
                // A child that has died is noticed by the reader.
                if send(&mut stdin, &answer).await.is_err() {
                    return;
                }
            }
        }));
        let mut in_flight = FuturesUnordered::new();
        let outcome = loop {
            tokio::select! {
                message = from_child.recv() => {
                    let line = match message {
                        Some(Ok(Some(line))) => line,
                        Some(Err(error)) => break Err(error),
                        Some(Ok(None)) | None => {
                            let status = child.wait().await.map_err(|error| {
                                internal(format!("cannot wait for the script process: {error}"))
                            })?;
                            break Err(exit_error(status, &self.limits));
                        }
                    };
                    match serde_json::from_str::<FromChild>(&line) {
                        // The host does its bookkeeping now, in the order the script calls.
                        Ok(FromChild::Call { id, request, site }) => {
                            let mut call: HostFuture = host.call_at(request, site);
                            // An answer ready at once (a replay from memory, a validation
                            // error) goes back before the next call is read, as the in-process
                            // engine answers it: the script then sees answers in call order.
                            match crate::runtime::answer_now(&mut call) {
                                Some(result) => {
                                    let _ = answers.send(ToChild::Answer {
                                        id,
                                        result,
                                        budget: host.budget(),
                                    });
                                }
                                None => in_flight.push(async move { (id, call.await) }),
                            }
                        }
                        Ok(FromChild::Done { result }) => {
                            let _ = child.wait().await;
                            break result.map_err(ScriptError::from);
                        }
                        Err(error) => {
                            break Err(internal(format!(
                                "the script process sent a malformed message: {error}"
                            )))
                        }
                    }
                }
                Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    let _ = answers.send(ToChild::Answer { id, result, budget: host.budget() });
                }
            }
        };
        drop((reader, writer));
        outcome
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<W, M>(writer: &mut W, message: &M) -> Result<(), ScriptError>
where
    W: tokio::io::AsyncWrite + Unpin,
    M: Serialize,
{
    let mut line = serde_json::to_vec(message)
        .map_err(|error| internal(format!("cannot encode a message: {error}")))?;
    line.push(b'\n');
    writer
        .write_all(&line)
        .await
        .map_err(|error| internal(format!("cannot write to the script process: {error}")))?;
    writer
        .flush()
        .await
        .map_err(|error| internal(format!("cannot write to the script process: {error}")))
}

/// The host calls of a script in the child, forwarded to the parent over stdout.
#[derive(Debug)]
struct PipeHost {
    out: Mutex<std::io::Stdout>,
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Result<Value, HostError>>>>,
    next_id: AtomicU64,
    budget: Mutex<BudgetSnapshot>,
    /// The parent's host reads call sites.
    call_sites: bool,
    /// The parent's host answers every call at once (see [`WorkflowHost::answers_at_once`]).
    answers_at_once: bool,
}

impl PipeHost {
    fn write(&self, message: &FromChild) -> std::io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("stdout lock poisoned"))?;
        out.write_all(&line)?;
        out.flush()
    }
}

impl WorkflowHost for PipeHost {
    fn call(&self, request: HostRequest) -> HostFuture {
        self.call_at(request, None)
    }

    fn wants_call_sites(&self) -> bool {
        self.call_sites
    }

    fn answers_at_once(&self) -> bool {
        self.answers_at_once
    }

    fn call_at(&self, request: HostRequest, site: Option<CallSite>) -> HostFuture {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (answer, answered) = tokio::sync::oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, answer);
        }
        let sent = self.write(&FromChild::Call { id, request, site });
        let answered = async move {
            sent.map_err(|error| {
                HostError::new(
                    HostErrorKind::Durability,
                    format!("cannot reach the engine: {error}"),
                )
            })?;
            answered.await.unwrap_or_else(|_| {
                Err(HostError::new(
                    HostErrorKind::Durability,
                    "the engine went away",
                ))
            })
        };
        if self.answers_at_once {
            // The script's own thread waits here (the answers are read on another), so the
            // script goes on with this answer already there, as in the in-process engine.
            let result = futures::executor::block_on(answered);
            return Box::pin(futures::future::ready(result));
        }
        Box::pin(answered)
    }

    fn budget(&self) -> BudgetSnapshot {
        self.budget
            .lock()
            .map(|budget| *budget)
            .unwrap_or(BudgetSnapshot {
                total: None,
                spent: 0,
            })
    }
}

/// The child side of [`IsolatedEngine`]: reads the start message from stdin, applies the
/// resource limits to this process (a CPU-time and a memory limit), evaluates the workflow,
/// forwarding host calls over stdout (one JSON object per line), and writes the outcome. Call it
/// from the `main` of the program the engine starts (this crate's `smol-durable-script-host`,
/// or a host application's own binary, like the `smol-durable` CLI); nothing else may write to
/// stdout. It runs its own tokio runtime, on a thread of its own when called from inside one
/// (an `#[tokio::main]`), so it works from either kind of `main`.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     smol_durable_boa::serve_script_host()
/// }
/// ```
pub fn serve_script_host() -> std::process::ExitCode {
    match block_on_own_runtime(serve) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(error)) | Err(error) => {
            eprintln!("smol-durable script host: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the future `make` returns on a current-thread runtime of its own: on this thread, or,
/// when this thread already drives a runtime (where `block_on` would panic), on a new one.
fn block_on_own_runtime<F, Fut, T>(make: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start a runtime: {error}"))
            .map(|runtime| runtime.block_on(make()))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::Builder::new()
        .name("smol-durable-script-host".to_owned())
        .spawn(run)
        .map_err(|error| format!("cannot start the script host thread: {error}"))?
        .join()
        .map_err(|_| "the script host thread panicked".to_owned())?
}

async fn serve() -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut first = String::new();
    stdin
        .read_line(&mut first)
        .await
        .map_err(|error| format!("cannot read the start message: {error}"))?;
    let Ok(ToChild::Start {
        path,
        text,
        args,
        budget,
        limits,
        run_id,
        max_sleep_ms,
        loop_iteration_limit,
        call_sites,
        answers_at_once,
    }) = serde_json::from_str::<ToChild>(&first)
    else {
        return Err("the first message is not a start message".to_owned());
    };
    apply_limits(&limits)?;
    let host = Arc::new(PipeHost {
        out: Mutex::new(std::io::stdout()),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        budget: Mutex::new(budget),
        call_sites,
        answers_at_once,
    });
    let answers = Arc::clone(&host);
    tokio::spawn(async move {
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line).await {
                Ok(0) | Err(_) => {
                    // The engine is gone: nothing can answer or store anything any more.
                    std::process::exit(3);
                }
                Ok(_) => {}
            }
            if let Ok(ToChild::Answer { id, result, budget }) = serde_json::from_str(&line) {
                if let Ok(mut snapshot) = answers.budget.lock() {
                    *snapshot = budget;
                }
                let waiter = answers
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut pending| pending.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
        }
    });
    let engine = BoaEngine::new().loop_iteration_limit(loop_iteration_limit);
    let invocation = ScriptInvocation {
        source: WorkflowSource { path, text },
        args,
        host: host.clone(),
        cancel: tokio_util::sync::CancellationToken::new(),
        run_id,
        max_sleep_ms,
    };
    let result = engine.evaluate(invocation).await.and_then(|value| {
        match smol_durable_core::limits::oversized(
            "the workflow result",
            &value,
            limits.max_output_bytes,
            "IsolationLimits::max_output_bytes",
        ) {
            Some(message) => Err(limit(message)),
            None => Ok(value),
        }
    });
    let done = FromChild::Done {
        result: result.map_err(|error| WireError::from(&error)),
    };
    host.write(&done)
        .map_err(|error| format!("cannot write the result: {error}"))?;
    // The JavaScript thread of an abandoned evaluation may still be parked; end the process.
    std::process::exit(0);
}

fn apply_limits(limits: &IsolationLimits) -> Result<(), String> {
    #[cfg(unix)]
    {
        use rlimit::Resource;
        // Only ever lowered: a hard limit the machine already sets below ours stays in force.
        let lower = |resource: Resource, soft: u64, hard: u64| -> std::io::Result<()> {
            let (_, current_hard) = resource.get()?;
            let hard = hard.min(current_hard);
            resource.set(soft.min(hard), hard)
        };
        // SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
        lower(
            Resource::CPU,
            limits.cpu_seconds,
            limits.cpu_seconds.saturating_add(1),
        )
        .map_err(|error| format!("cannot limit CPU time: {error}"))?;
        lower(Resource::AS, limits.memory_bytes, limits.memory_bytes)
            .map_err(|error| format!("cannot limit memory: {error}"))?;
    }
    #[cfg(not(unix))]
    let _ = limits;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_host_runs_outside_a_runtime() {
        assert_eq!(block_on_own_runtime(|| async { 7 }), Ok(7));
    }

    #[tokio::test]
    async fn the_script_host_runs_inside_a_runtime_too() {
        // `block_on` here would panic: "Cannot start a runtime from within a runtime".
        assert_eq!(block_on_own_runtime(|| async { 7 }), Ok(7));
    }
}
