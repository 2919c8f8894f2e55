//! The JavaScript [`ScriptEngine`] for smol-durable, on [boa](https://boajs.dev).
//!
//! Workflows are ES modules with top-level `await`, written for smol-workflows:
//!
//! ```js
//! import { sleep } from "workflow:extra";
//! export const meta = { name: "hello", description: "greets, waits, greets again" };
//! const first = await agent(`say hello to ${args.name}`);
//! await sleep(1000);
//! export default { first, second: await agent("and goodbye") };
//! ```
//!
//! Each evaluation runs on its own OS thread (boa's `Context` is `!Send`) with a large stack;
//! host calls become promises that the core resolves, so `Promise.all` and `parallel` run agent
//! calls concurrently. `meta` is read by a literal parser without running anything.
#![deny(missing_docs)]

mod branch;
mod isolated;
mod loader;
mod meta;
mod runtime;
mod stalls;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use smol_durable_core::{
    ScriptEngine, ScriptError, ScriptErrorKind, ScriptInvocation, WorkflowMeta, WorkflowSource,
};

pub use isolated::{serve_script_host, IsolatedEngine, IsolationLimits};
pub use meta::{meta_value, read_meta, MISSING_DEFAULT, MISSING_META, NON_LITERAL_META};

/// Stack of each JavaScript thread: deep recursion in scripts and in value conversion must fail
/// inside boa's own limits, not overflow.
const JS_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Runs JavaScript workflows.
///
/// ```
/// use std::sync::Arc;
/// let engine: Arc<dyn smol_durable_core::ScriptEngine> = Arc::new(smol_durable_boa::BoaEngine::new());
/// ```
#[derive(Debug, Clone)]
pub struct BoaEngine {
    loop_iteration_limit: u64,
}

impl Default for BoaEngine {
    fn default() -> Self {
        Self {
            loop_iteration_limit: 20_000_000,
        }
    }
}

impl BoaEngine {
    /// An engine with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Iterations any single loop may run before the run fails (default 20 million): boa cannot
    /// interrupt a running script, so this is what stops `while (true) {}`.
    pub fn loop_iteration_limit(mut self, limit: u64) -> Self {
        self.loop_iteration_limit = limit;
        self
    }
}

/// The name of the threads scripts run on.
const JS_THREAD: &str = "smol-durable-js";

/// A panic on a script thread is caught and reported as the run's error (see
/// [`panic_error`]); the default hook would also dump it on stderr before that message, so
/// there it goes to the `debug` diagnostics instead (with its location, for bug reports).
/// Other threads keep the hook they had.
fn quiet_js_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(JS_THREAD) {
                tracing::debug!(panic = %info, "the JavaScript thread panicked");
            } else {
                previous(info);
            }
        }));
    });
}

/// Abandons a JavaScript thread's evaluation when the future awaiting it is dropped.
struct AbandonOnDrop {
    stop: runtime::StopSlot,
    calls: Arc<runtime::Calls>,
    thread: std::thread::Thread,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.calls.abandon();
        if let Ok(slot) = self.stop.lock() {
            if let Some(stop) = slot.as_ref() {
                stop();
            }
        }
        self.thread.unpark();
    }
}

/// What a panic said, when it said it as text.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
}

/// boa 0.22 panics when a runtime limit is hit inside an async module; the panic is contained
/// on the JavaScript thread and reported as the limit it was.
fn panic_error(panic: &(dyn std::any::Any + Send)) -> ScriptError {
    let text = panic_text(panic).unwrap_or("");
    let limit = if text.contains("RuntimeLimit(Recursion)") {
        Some("the workflow exceeded the JavaScript recursion limit (runaway recursion?)")
    } else if text.contains("RuntimeLimit(LoopIteration)") {
        Some("the workflow exceeded the JavaScript loop iteration limit")
    } else if text.contains("RuntimeLimit(StackSize)") {
        Some("the workflow exceeded the JavaScript stack size limit")
    } else {
        None
    };
    match limit {
        Some(message) => ScriptError::new(ScriptErrorKind::Limit, message),
        None => ScriptError::new(
            ScriptErrorKind::Internal,
            format!(
                "the JavaScript engine failed: {}",
                text.lines().next().unwrap_or("panic")
            ),
        ),
    }
}

#[async_trait]
impl ScriptEngine for BoaEngine {
    fn read_metadata(&self, source: &WorkflowSource) -> Result<WorkflowMeta, ScriptError> {
        read_meta(&source.text)
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
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let root_dir = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let stop: runtime::StopSlot = Arc::new(std::sync::Mutex::new(None));
        let calls = Arc::new(runtime::Calls::new());
        let job = runtime::Job {
            path: source.path.clone(),
            text: source.text,
            root_dir,
            args,
            host: Arc::clone(&host),
            calls: Arc::clone(&calls),
            run_id,
            max_sleep_ms,
            loop_iteration_limit: self.loop_iteration_limit,
            stop: Arc::clone(&stop),
            runtime: tokio::runtime::Handle::current(),
        };
        quiet_js_panics();
        let thread = std::thread::Builder::new()
            .name(JS_THREAD.to_owned())
            .stack_size(JS_STACK_BYTES)
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime::run(job)))
                        .unwrap_or_else(|panic| Err(panic_error(panic.as_ref())));
                let _ = done_tx.send(outcome);
            })
            .map_err(|error| {
                ScriptError::new(
                    ScriptErrorKind::Internal,
                    format!("cannot start a JavaScript thread: {error}"),
                )
            })?;
        // The JavaScript thread drives the script's host calls itself. Dropping this future
        // (cancellation past its grace) abandons the evaluation: its calls in flight are dropped
        // here, its job queue stops (so a script spinning on promise jobs ends too) and the
        // thread wakes and ends.
        let _abandon_on_drop = AbandonOnDrop {
            stop,
            calls,
            thread: thread.thread().clone(),
        };
        done.await.unwrap_or_else(|_| {
            Err(ScriptError::new(
                ScriptErrorKind::Internal,
                "the JavaScript thread ended without an answer",
            ))
        })
    }
}
