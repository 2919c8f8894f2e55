//! The JavaScript side: one boa `Context` on its own OS thread per evaluation. (Long, but one
//! thing: the thread's event loop and the host-call bridge that lives inside it.)
//!
//! Host calls made by the script (`agent`, `sleep`, `workflow`, `log`, `phase`) go straight to
//! the core's [`WorkflowHost::call`] on this thread, in the order the script makes them, and this
//! thread drives the returned futures itself (inside the runtime's context, for its timers and
//! I/O) whenever the job queue is empty. It sleeps until a call's waker wakes it — the store's
//! writer thread, say, straight after its commit, without a detour through the runtime's
//! workers — then resolves the matching promises and runs the job queue again. When the script
//! awaits something while no host call is outstanding and no job is queued, nothing can ever
//! settle it: that is reported as a deadlock instead of hanging.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use boa_engine::builtins::promise::{PromiseState, ResolvingFunctions};
use boa_engine::object::builtins::JsPromise;
use boa_engine::property::Attribute;
use boa_engine::vm::SourcePath;
use boa_engine::{
    js_string, Context, JsArgs, JsError, JsNativeError, JsObject, JsResult, JsString, JsValue,
    Module, NativeFunction, Source,
};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use smol_durable_core::signals::{check_signal_name, WaitSpec};
use smol_durable_core::{
    CallSite, HostError, HostFuture, HostRequest, ScriptError, ScriptErrorKind, WorkflowHost,
};

use crate::loader::{Sandbox, WorkflowLoader};

const PRELUDE: &str = include_str!("prelude.js");

/// The name the prelude's frames carry in stack traces, so errors it raises (`sleep(-5)`)
/// point at the user's line that called it instead.
const PRELUDE_PATH: &str = "<smol-durable prelude>";

/// Deepest value that crosses between the script and the host, either way (serde_json's own
/// parsing limit).
pub(crate) const MAX_DEPTH: usize = 100;

/// Raises the stop flag of a JavaScript thread's job queue (set once the thread has one).
pub(crate) type StopSlot = Arc<std::sync::Mutex<Option<Box<dyn Fn() + Send + Sync>>>>;

/// An answer to a host call.
struct Answer {
    id: u64,
    result: Result<Value, HostError>,
}

/// A host call being driven: its promise's id and answer, or what it panicked with.
type InFlight = BoxFuture<'static, Result<Answer, String>>;

/// The host calls of one evaluation not answered yet, with what is needed to drive them.
/// Shared with the evaluation, which drops the calls at once when it is abandoned.
pub(crate) struct Calls {
    driven: std::sync::Mutex<Driven>,
    /// Raised when the evaluation is abandoned.
    abandoned: AtomicBool,
    /// Unparks the JavaScript thread (made by that thread, at its first drive).
    waker: std::sync::OnceLock<Waker>,
}

/// The calls and what driving them produced, until [`settle`] takes it.
#[derive(Default)]
struct Driven {
    in_flight: FuturesUnordered<InFlight>,
    /// Answers not resolved yet.
    ready: Vec<Answer>,
    /// What the first call that panicked panicked with.
    panicked: Option<String>,
    /// When the calls were last driven.
    driven_at: Option<Instant>,
}

/// How often a script that keeps its job queue busy (promise chains, a spinning microtask)
/// still has its host calls driven, so they finish (and a cancelled run's calls end) even though
/// the script never waits.
const DRIVE_WHILE_BUSY_EVERY: Duration = Duration::from_millis(1);

impl Calls {
    /// No calls yet.
    pub(crate) fn new() -> Self {
        Self {
            driven: std::sync::Mutex::default(),
            abandoned: AtomicBool::new(false),
            waker: std::sync::OnceLock::new(),
        }
    }

    /// Abandons the evaluation: drops the calls in flight here and now (their subprocesses and
    /// claims go with them). The caller unparks the thread, which then ends as cancelled.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        let dropped = std::mem::take(&mut *self.lock());
        drop(dropped);
    }

    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Driven> {
        // A call's panic is caught inside its future: the lock is never held by one.
        self.driven
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, id: u64, call: HostFuture) {
        if self.abandoned() {
            return;
        }
        self.lock().in_flight.push(Box::pin(
            std::panic::AssertUnwindSafe(call)
                .catch_unwind()
                .map(move |outcome| match outcome {
                    Ok(result) => Ok(Answer { id, result }),
                    Err(panic) => Err(crate::panic_text(panic.as_ref())
                        .unwrap_or("a panic")
                        .to_owned()),
                }),
        ));
    }

    /// Polls the calls once (only if they were last driven [`DRIVE_WHILE_BUSY_EVERY`] ago or
    /// more, when `only_if_due`), keeping what they produced for [`Calls::take_ready`].
    fn drive(&self, only_if_due: bool) {
        let now = Instant::now();
        let mut driven = self.lock();
        if only_if_due
            && driven
                .driven_at
                .is_some_and(|at| now.duration_since(at) < DRIVE_WHILE_BUSY_EVERY)
        {
            return;
        }
        driven.driven_at = Some(now);
        let waker = self
            .waker
            .get_or_init(|| Waker::from(Arc::new(ThreadWaker(std::thread::current()))));
        let mut context = std::task::Context::from_waker(waker);
        while let Poll::Ready(Some(outcome)) = driven.in_flight.poll_next_unpin(&mut context) {
            match outcome {
                Ok(answer) => driven.ready.push(answer),
                Err(panic) => {
                    driven.panicked.get_or_insert(panic);
                }
            }
        }
    }

    /// The answers driving produced so far, or what a call panicked with.
    fn take_ready(&self) -> Result<Vec<Answer>, String> {
        let mut driven = self.lock();
        match driven.panicked.take() {
            Some(panic) => Err(panic),
            None => Ok(std::mem::take(&mut driven.ready)),
        }
    }
}

/// Everything the JS thread needs.
pub(crate) struct Job {
    pub path: PathBuf,
    pub text: String,
    pub root_dir: PathBuf,
    pub args: Value,
    pub host: Arc<dyn WorkflowHost>,
    /// The script's host calls in flight, driven by this thread.
    pub calls: Arc<Calls>,
    /// `runId` in the script.
    pub run_id: String,
    pub max_sleep_ms: u64,
    pub loop_iteration_limit: u64,
    /// Where this thread puts its job queue's stop flag, for the evaluation to raise when it
    /// is abandoned (a script spinning on promise jobs never waits for an answer).
    pub stop: StopSlot,
    /// The runtime whose timers and I/O the host calls use: they are polled in its context.
    pub runtime: tokio::runtime::Handle,
}

struct HostState {
    host: Arc<dyn WorkflowHost>,
    /// Host calls not answered yet, driven by [`settle`] (and by [`drive_while_busy`]).
    calls: Arc<Calls>,
    pending: HashMap<u64, ResolvingFunctions>,
    next_id: u64,
    /// The longest sleep, and the longest wait timeout.
    max_sleep_ms: u64,
    /// `runId` in the script.
    run_id: String,
    /// The error objects host rejections became, with their rejection ids: when one of them
    /// fails the script, the host learns which rejection it was.
    rejections: Vec<(JsObject, u64)>,
    /// The host reads call sites (read once: finding one walks the stack).
    call_sites: bool,
}

thread_local! {
    // One evaluation per thread; cleared before its Context is dropped.
    static STATE: RefCell<Option<HostState>> = const { RefCell::new(None) };
}

/// Runs the workflow module to completion on the current (dedicated) thread.
pub(crate) fn run(job: Job) -> Result<Value, ScriptError> {
    let Job {
        path,
        text,
        root_dir,
        args,
        host,
        calls,
        run_id,
        max_sleep_ms,
        loop_iteration_limit,
        stop,
        runtime,
    } = job;
    let _runtime = runtime.enter();
    let call_sites = host.wants_call_sites();
    STATE.with(|state| {
        *state.borrow_mut() = Some(HostState {
            call_sites,
            host,
            calls: Arc::clone(&calls),
            pending: HashMap::new(),
            next_id: 0,
            max_sleep_ms,
            run_id,
            rejections: Vec::new(),
        });
    });
    // Promise resolvers are GC handles: they must go before the Context and boa's GC do, on
    // every path out of here, unwinding included (thread-local destructors run in the wrong
    // order for them).
    struct ClearState;
    impl Drop for ClearState {
        fn drop(&mut self) {
            STATE.with(|state| state.borrow_mut().take());
        }
    }
    let _clear = ClearState;
    let limits = Limits {
        max_sleep_ms,
        loop_iteration_limit,
    };
    evaluate(&path, &text, root_dir, &args, &calls, limits, &stop)
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_sleep_ms: u64,
    loop_iteration_limit: u64,
}

fn evaluate(
    path: &std::path::Path,
    text: &str,
    root_dir: PathBuf,
    args: &Value,
    calls: &Calls,
    limits: Limits,
    stop: &StopSlot,
) -> Result<Value, ScriptError> {
    crate::branch::reset();
    crate::stalls::reset();
    let executor = Rc::new(crate::stalls::CountingExecutor::default());
    if let Ok(mut slot) = stop.lock() {
        *slot = Some(Box::new(executor.stopper()));
    }
    // Abandoned before the stop flag was in its slot: raise it now.
    if calls.abandoned() {
        executor.stopper()();
    }
    let sandbox = Rc::new(Sandbox::default());
    let loader = Rc::new(WorkflowLoader::new(root_dir));
    let mut context = Context::builder()
        .module_loader(loader.clone())
        .host_hooks(sandbox.clone())
        .job_executor(executor)
        .build()
        .map_err(|error| internal(&format!("cannot create a JavaScript context: {error}")))?;
    let ctx = &mut context;
    ctx.runtime_limits_mut()
        .set_loop_iteration_limit(limits.loop_iteration_limit);
    install_host(ctx, args, limits.max_sleep_ms).map_err(|error| internal(&error.to_string()))?;

    // boa treats a module whose only top-level suspension is `for await` as synchronous; a
    // trailing await makes every module asynchronous.
    let module_text = format!("{text}\n;await undefined;\n");
    let source = Source::from_bytes(module_text.as_bytes()).with_path(path);
    let module = match Module::parse(source, None, ctx) {
        Ok(module) => module,
        // boa 0.22 reads every `export default async` as an async function declaration, so
        // `export default async (args, ctx) => …` fails to parse; the same module with the
        // arrow bound to a name first does.
        Err(error) => match async_arrow_default(&module_text) {
            Some(rewritten) => {
                let source = Source::from_bytes(rewritten.as_bytes()).with_path(path);
                Module::parse(source, None, ctx).map_err(|_| syntax_error(&error, path))?
            }
            None => return Err(syntax_error(&error, path)),
        },
    };
    loader.register(path, &module);
    let loaded = module.load_link_evaluate(ctx);
    settle(ctx, &loaded, calls, &sandbox).map_err(|error| loader.classify(error))?;
    let exported = module
        .namespace(ctx)
        .get(js_string!("default"), ctx)
        .map_err(|error| thrown(&error, ctx))?;
    let value = match exported.as_callable() {
        Some(function) => {
            let global = ctx.global_object();
            let args = global
                .get(js_string!("args"), ctx)
                .map_err(|e| thrown(&e, ctx))?;
            let workflow_ctx = global
                .get(js_string!("__sw_ctx"), ctx)
                .map_err(|e| thrown(&e, ctx))?;
            function
                .call(&JsValue::undefined(), &[args, workflow_ctx], ctx)
                .map_err(|error| thrown(&error, ctx))?
        }
        None => exported,
    };
    let value = match value.as_promise() {
        Some(promise) => settle(ctx, &promise, calls, &sandbox)?,
        None => value,
    };
    to_json(&value, ctx)
}

fn install_host(ctx: &mut Context, args: &Value, max_sleep_ms: u64) -> JsResult<()> {
    let run_id = STATE.with(|state| {
        state
            .borrow()
            .as_ref()
            .map(|state| state.run_id.clone())
            .unwrap_or_default()
    });
    ctx.register_global_callable(
        js_string!("__sw_call"),
        3,
        NativeFunction::from_fn_ptr(host_call),
    )?;
    ctx.register_global_callable(
        js_string!("__sw_fork_branch"),
        0,
        NativeFunction::from_fn_ptr(crate::branch::fork_native),
    )?;
    ctx.register_global_callable(
        js_string!("__sw_enter_branch"),
        1,
        NativeFunction::from_fn_ptr(crate::branch::enter_native),
    )?;
    ctx.register_global_callable(
        js_string!("__sw_budget"),
        0,
        NativeFunction::from_fn_ptr(budget_now),
    )?;
    ctx.register_global_property(
        js_string!("__sw_max_sleep_ms"),
        max_sleep_ms as f64,
        Attribute::all(),
    )?;
    ctx.register_global_property(
        js_string!("__sw_max_depth"),
        MAX_DEPTH as f64,
        Attribute::all(),
    )?;
    ctx.register_global_property(
        js_string!("__sw_run_id"),
        JsString::from(run_id.as_str()),
        Attribute::all(),
    )?;
    ctx.register_global_property(
        js_string!("__sw_args"),
        JsString::from(args.to_string().as_str()),
        Attribute::all(),
    )?;
    ctx.eval(Source::from_bytes(PRELUDE.as_bytes()).with_path(Path::new(PRELUDE_PATH)))?;
    Ok(())
}

/// `__sw_call(kind, first, second)`: makes the host call now and returns a promise for its
/// answer. Strings and numbers arrive as they are, objects as JSON text (or null).
fn host_call(_this: &JsValue, arguments: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let kind = arguments
        .get_or_undefined(0)
        .to_string(ctx)?
        .to_std_string_escaped();
    let (first, second) = (arguments.get_or_undefined(1), arguments.get_or_undefined(2));
    // A lone surrogate cannot be UTF-8: it becomes U+FFFD, as in every value crossing over.
    let text = |value: &JsValue, ctx: &mut Context| -> JsResult<String> {
        Ok(value.to_string(ctx)?.to_std_string_lossy())
    };
    let parse = |value: &JsValue, ctx: &mut Context| -> JsResult<Value> {
        if value.is_null_or_undefined() {
            return Ok(Value::Null);
        }
        let text = value.to_string(ctx)?.to_std_string_escaped();
        from_js_json(&text).map_err(|error| {
            JsNativeError::typ()
                .with_message(format!("invalid host call argument: {error}"))
                .into()
        })
    };
    let request = match kind.as_str() {
        "agent" => HostRequest::Agent {
            prompt: text(first, ctx)?,
            options: parse(second, ctx)?,
            phase: crate::branch::phase(),
        },
        "sleep" => HostRequest::Sleep {
            duration_ms: first.to_number(ctx)?.max(0.0) as u64,
        },
        "workflow" => HostRequest::Workflow {
            reference: parse(first, ctx)?,
            args: parse(second, ctx)?,
        },
        // Checked here, where the script made the call, so a bad argument throws there.
        "waitFor" | "waitForAny" => {
            let any = kind == "waitForAny";
            let names = match parse(first, ctx)? {
                Value::Array(names) => names,
                one => vec![one],
            };
            let options = parse(second, ctx)?;
            let max_sleep_ms =
                STATE.with(|state| state.borrow().as_ref().map_or(0, |s| s.max_sleep_ms));
            let spec = match WaitSpec::parse(&names, &options, any, max_sleep_ms) {
                Ok(spec) => spec,
                Err(error) => return argument_error(ctx, &error.message, error.out_of_range),
            };
            HostRequest::Wait {
                names: spec.names,
                options,
                any,
            }
        }
        "signal" => {
            let target = parse(first, ctx)?;
            let (Some(run_id), Some(name)) = (
                target.get(0).and_then(Value::as_str),
                target.get(1).and_then(Value::as_str),
            ) else {
                return Err(JsNativeError::typ()
                    .with_message("signal(runId, name, payload) needs a run id and a name")
                    .into());
            };
            if let Err(problem) = check_signal_name(name) {
                return argument_error(ctx, &format!("signal(): {problem}"), false);
            }
            HostRequest::Signal {
                run_id: run_id.to_owned(),
                name: name.to_owned(),
                payload: parse(second, ctx)?,
            }
        }
        "log" => HostRequest::Log {
            values: match parse(first, ctx)? {
                Value::Array(values) => values,
                other => vec![other],
            },
        },
        "phase" => {
            let name = text(first, ctx)?;
            crate::branch::set_phase(name.clone());
            HostRequest::Phase {
                name,
                options: if second.is_undefined() {
                    None
                } else {
                    Some(parse(second, ctx)?)
                },
            }
        }
        other => {
            return Err(JsNativeError::typ()
                .with_message(format!("unknown host call {other}"))
                .into())
        }
    };
    let fire_and_forget = matches!(request, HostRequest::Log { .. } | HostRequest::Phase { .. });
    let wants_site = !fire_and_forget
        && STATE.with(|state| {
            state
                .borrow()
                .as_ref()
                .is_some_and(|state| state.call_sites)
        });
    let site = if wants_site { call_site(ctx) } else { None };
    let (promise, resolvers) = JsPromise::new_pending(ctx);
    enum Sent {
        Forgotten,
        Queued,
        Answered(Result<Value, HostError>),
        Closed,
    }
    let sent = STATE.with(|state| {
        let mut state = state.borrow_mut();
        let Some(state) = state.as_mut() else {
            return Sent::Closed;
        };
        // The call happens here, synchronously, in the order the script made it.
        let mut future = state.host.call_at(request, site);
        if fire_and_forget {
            return Sent::Forgotten;
        }
        // A host that can answer at once (validation errors, replays from memory) is answered
        // here, without a turn of the event loop.
        if let Some(result) = answer_now(&mut future) {
            return Sent::Answered(result);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.pending.insert(id, resolvers.clone());
        state.calls.push(id, future);
        Sent::Queued
    });
    match sent {
        Sent::Queued => Ok(promise.into()),
        Sent::Forgotten => Ok(JsValue::undefined()),
        Sent::Answered(result) => {
            settle_promise(ctx, &resolvers, result)
                .map_err(|error| JsNativeError::error().with_message(error.message().to_owned()))?;
            Ok(promise.into())
        }
        Sent::Closed => {
            let error = JsNativeError::error()
                .with_message("workflow cancelled")
                .into_opaque(ctx);
            resolvers
                .reject
                .call(&JsValue::undefined(), &[error.into()], ctx)?;
            Ok(promise.into())
        }
    }
}

/// The answer of a host call that is ready at its first poll (a validation error, a replay
/// from memory), taken without waiting; `None` leaves the call to be driven.
pub(crate) fn answer_now(call: &mut HostFuture) -> Option<Result<Value, HostError>> {
    let waker = futures::task::noop_waker();
    let mut context = std::task::Context::from_waker(&waker);
    match call.as_mut().poll(&mut context) {
        std::task::Poll::Ready(result) => Some(result),
        std::task::Poll::Pending => None,
    }
}

/// The innermost frame of the workflow's own code (not the prelude's) on the stack.
fn call_site(ctx: &Context) -> Option<CallSite> {
    ctx.stack_trace().find_map(|frame| {
        let location = frame.position();
        let SourcePath::Path(path) = location.path else {
            return None;
        };
        if path.as_os_str() == PRELUDE_PATH {
            return None;
        }
        let position = location.position?;
        Some(CallSite {
            file: path.display().to_string(),
            line: position.line_number(),
            column: position.column_number(),
        })
    })
}

/// A bad argument of `waitFor`, `waitForAny` or `signal`, handed back to the prelude, which
/// throws it where the script made the call (a `RangeError` when `out_of_range`, else a
/// `TypeError`), so the script's own location is the one reported.
fn argument_error(ctx: &mut Context, message: &str, out_of_range: bool) -> JsResult<JsValue> {
    JsValue::from_json(
        &serde_json::json!({ "argumentError": message, "range": out_of_range }),
        ctx,
    )
}

/// `__sw_budget()`: `{total, spent}` now.
fn budget_now(_this: &JsValue, _arguments: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let snapshot = STATE.with(|state| state.borrow().as_ref().map(|state| state.host.budget()));
    let value = match snapshot {
        Some(budget) => serde_json::json!({ "total": budget.total, "spent": budget.spent }),
        None => serde_json::json!({ "total": null, "spent": 0 }),
    };
    JsValue::from_json(&value, ctx)
}

/// Wakes the JavaScript thread when a host call it drives can make progress.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Called as jobs are queued: a script that keeps its job queue busy never waits, so its host
/// calls are driven from here too, at most every [`DRIVE_WHILE_BUSY_EVERY`]; [`settle`]
/// resolves what they produced.
pub(crate) fn drive_while_busy() {
    let calls = STATE.with(|state| {
        state
            .try_borrow()
            .ok()
            .and_then(|state| state.as_ref().map(|state| Arc::clone(&state.calls)))
    });
    if let Some(calls) = calls {
        calls.drive(true);
    }
}

/// Runs jobs and resolves host answers until `promise` settles. A rejection nobody handles by
/// the time the job queue is empty fails the run, as an uncaught rejection does in Node.
fn settle(
    ctx: &mut Context,
    promise: &JsPromise,
    calls: &Calls,
    sandbox: &Sandbox,
) -> Result<JsValue, ScriptError> {
    let host_panicked = |panic: String| {
        tracing::error!(%panic, "a host call panicked");
        ScriptError::new(
            ScriptErrorKind::Internal,
            format!("the script engine panicked: a host call panicked: {panic}"),
        )
    };
    loop {
        ctx.run_jobs().map_err(|error| thrown(&error, ctx))?;
        if let Some(reason) = sandbox.take_unhandled_rejection() {
            return Err(thrown(&JsError::from_opaque(reason), ctx));
        }
        match promise.state() {
            PromiseState::Fulfilled(value) => return Ok(value),
            PromiseState::Rejected(reason) => {
                return Err(thrown(&JsError::from_opaque(reason), ctx));
            }
            PromiseState::Pending => {}
        }
        let outstanding =
            STATE.with(|state| state.borrow().as_ref().map_or(0, |s| s.pending.len()));
        if outstanding == 0 {
            if let Some(lost) = crate::stalls::diagnose() {
                return Err(lost);
            }
            return Err(ScriptError::deadlock(
                "the workflow awaits a promise that can never settle: no agent, sleep or workflow \
                 call is pending and nothing else can resolve it (a runaway recursion after an \
                 await ends the same way: the JavaScript engine drops that error)",
            ));
        }
        let ready = loop {
            if calls.abandoned() {
                return Err(ScriptError::new(
                    ScriptErrorKind::Cancelled,
                    "workflow cancelled",
                ));
            }
            calls.drive(false);
            let ready = calls.take_ready().map_err(host_panicked)?;
            if !ready.is_empty() {
                break ready;
            }
            // Until a call's waker or the abandoning evaluation unparks this thread (a wake
            // that came first returns at once).
            std::thread::park();
        };
        for answer in ready {
            resolve(ctx, answer)?;
        }
    }
}

fn resolve(ctx: &mut Context, answer: Answer) -> Result<(), ScriptError> {
    let resolvers = STATE.with(|state| {
        state
            .borrow_mut()
            .as_mut()
            .and_then(|s| s.pending.remove(&answer.id))
    });
    match resolvers {
        Some(resolvers) => settle_promise(ctx, &resolvers, answer.result),
        None => Ok(()),
    }
}

/// Fulfils or rejects a host call's promise with the host's answer.
fn settle_promise(
    ctx: &mut Context,
    resolvers: &ResolvingFunctions,
    result: Result<Value, HostError>,
) -> Result<(), ScriptError> {
    let result = result.and_then(|value| {
        if json_depth(&value) > MAX_DEPTH {
            Err(HostError::new(
                smol_durable_core::HostErrorKind::Invalid,
                format!("the host's answer is nested deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(value)
        }
    });
    let settled = match result {
        Ok(value) => JsValue::from_json(&value, ctx)
            .and_then(|value| resolvers.resolve.call(&JsValue::undefined(), &[value], ctx)),
        Err(error) => {
            let rejection_id = error.rejection_id;
            let timed_out = error.kind == smol_durable_core::HostErrorKind::WaitTimeout;
            let error = JsNativeError::error()
                .with_message(error.message)
                .into_opaque(ctx);
            if timed_out {
                // What scripts test for: `error.name === "WaitTimeoutError"`.
                error
                    .set(
                        js_string!("name"),
                        js_string!("WaitTimeoutError"),
                        false,
                        ctx,
                    )
                    .map_err(|error| thrown(&error, ctx))?;
            }
            if let Some(id) = rejection_id {
                STATE.with(|state| {
                    if let Some(state) = state.borrow_mut().as_mut() {
                        state.rejections.push((error.clone(), id));
                    }
                });
            }
            resolvers
                .reject
                .call(&JsValue::undefined(), &[error.into()], ctx)
        }
    };
    settled.map(drop).map_err(|error| thrown(&error, ctx))
}

/// The workflow's value as JSON (`undefined` → `null`), via the prelude's depth-checked
/// `JSON.stringify`, so cycles, BigInts and runaway nesting fail with clear errors.
fn to_json(value: &JsValue, ctx: &mut Context) -> Result<Value, ScriptError> {
    let global = ctx.global_object();
    let convert = global
        .get(js_string!("__sw_to_json"), ctx)
        .map_err(|error| thrown(&error, ctx))?;
    let Some(convert) = convert.as_callable() else {
        return Err(internal("the workflow prelude is missing"));
    };
    let text = convert
        .call(&JsValue::undefined(), std::slice::from_ref(value), ctx)
        .map_err(|error| {
            let message = thrown(&error, ctx);
            ScriptError::thrown(format!(
                "the workflow's result cannot be converted to JSON: {}",
                message.message()
            ))
        })?;
    if text.is_undefined() {
        return Ok(Value::Null);
    }
    let text = text
        .to_string(ctx)
        .map_err(|error| thrown(&error, ctx))?
        .to_std_string_escaped();
    from_js_json(&text).map_err(|error| {
        ScriptError::thrown(format!(
            "the workflow's result cannot be converted to JSON: {error}"
        ))
    })
}

/// Parses JSON that `JSON.stringify` wrote. A JavaScript number is a double: an integer too
/// large for one to hold exactly (beyond ±2^53) is the double it stands for, not an exact
/// integer (`12345678901234567890` is `1.2345678901234567e19`).
fn from_js_json(text: &str) -> serde_json::Result<Value> {
    let mut value = serde_json::from_str(text)?;
    as_doubles(&mut value);
    Ok(value)
}

fn as_doubles(value: &mut Value) {
    const EXACT: u64 = 1 << 53;
    match value {
        Value::Number(number) => {
            let inexact = match (number.as_u64(), number.as_i64()) {
                (Some(n), _) => n > EXACT,
                (None, Some(n)) => n.unsigned_abs() > EXACT,
                _ => false,
            };
            if let (true, Some(double)) = (inexact, number.as_f64()) {
                if let Some(double) = serde_json::Number::from_f64(double) {
                    *number = double;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_doubles),
        Value::Object(map) => map.values_mut().for_each(as_doubles),
        _ => {}
    }
}

/// A thrown value as a script error: its message, where it was thrown (`file:line:col`, the
/// innermost frame of the user's code) when boa recorded it, and the host rejection it is when
/// it is the very error object a host rejection became.
fn thrown(error: &JsError, ctx: &mut Context) -> ScriptError {
    let rejection_id = error
        .as_opaque()
        .and_then(JsValue::as_object)
        .and_then(|object| {
            STATE.with(|state| {
                let state = state.borrow();
                let rejections = &state.as_ref()?.rejections;
                rejections
                    .iter()
                    .find(|(rejected, _)| JsObject::equals(rejected, &object))
                    .map(|(_, id)| *id)
            })
        });
    let error = thrown_value(error, ctx);
    match rejection_id {
        Some(id) => error.with_rejection_id(id),
        None => error,
    }
}

fn thrown_value(error: &JsError, ctx: &mut Context) -> ScriptError {
    // A thrown value that is not an Error (`throw "x"`, `throw {code: 7}`): the string itself,
    // or its compact JSON, as smol-wf reported it.
    if let Some(value) = error.as_opaque() {
        let is_error = value
            .as_object()
            .is_some_and(|object| object.is::<boa_engine::builtins::error::Error>());
        if !is_error {
            let message = match value.as_string() {
                Some(text) => text.to_std_string_lossy(),
                None => match value.to_json(ctx) {
                    Ok(Some(json)) => json.to_string(),
                    _ => value.display().to_string(),
                },
            };
            return ScriptError::thrown(message);
        }
    }
    let text = error.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    // boa appends where a native error was raised ("(native)", "(unknown at :122:43)"): inside
    // the engine's own prelude, never useful to a workflow author.
    let message = match first.rsplit_once(" (") {
        Some((message, tail))
            if tail == "native)" || tail.contains(" at ") || tail.starts_with(PRELUDE_PATH) =>
        {
            message
        }
        _ => first,
    }
    .to_owned();
    let location = lines
        .filter_map(|line| line.trim().strip_prefix("at "))
        .filter_map(|frame| {
            frame
                .rsplit_once('(')
                .map(|(_, at)| at.trim_end_matches(')'))
        })
        .find(|at| *at != "native" && at.contains(':') && !at.starts_with(PRELUDE_PATH))
        .map(str::to_owned);
    let error = ScriptError::thrown(message);
    match location {
        Some(location) => error.with_location(location),
        None => error,
    }
}

/// The module with `export default async <arrow>` at the start of a line rewritten as a
/// binding of the same length (`let __sw_dflt =async <arrow>`, so positions in error messages
/// stay right) exported at the end; `None` when there is no such line.
fn async_arrow_default(text: &str) -> Option<String> {
    const WRITTEN: &str = "export default async";
    const BOUND: &str = "let __sw_dflt =async";
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        if let Some(rest) = line[indent..].strip_prefix(WRITTEN) {
            let next = rest.trim_start();
            let is_function = next.strip_prefix("function").is_some_and(|after| {
                !after.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
            });
            if rest.starts_with(char::is_whitespace) && !next.is_empty() && !is_function {
                let start = offset + indent;
                let mut rewritten = String::with_capacity(text.len() + 32);
                rewritten.push_str(&text[..start]);
                rewritten.push_str(BOUND);
                rewritten.push_str(&text[start + WRITTEN.len()..]);
                rewritten.push_str("\nexport default __sw_dflt;\n");
                return Some(rewritten);
            }
        }
        offset += line.len();
    }
    None
}

/// A parse error as "message" plus `file:line:col` of the user's source.
fn syntax_error(error: &JsError, path: &std::path::Path) -> ScriptError {
    let text = error.to_string();
    let text = text.lines().next().unwrap_or_default();
    let text = text.strip_suffix(" (native)").unwrap_or(text);
    let Some((message, position)) = text.rsplit_once(" at line ") else {
        return ScriptError::new(ScriptErrorKind::Syntax, text);
    };
    let mut numbers = position
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty());
    let error = ScriptError::new(ScriptErrorKind::Syntax, message.trim_end_matches(','));
    match (numbers.next(), numbers.next()) {
        (Some(line), Some(col)) => error.with_location(format!("{}:{line}:{col}", path.display())),
        _ => error,
    }
}

/// Nesting depth of a JSON value, without recursion.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    deepest
}

fn internal(message: &str) -> ScriptError {
    ScriptError::new(ScriptErrorKind::Internal, message)
}
