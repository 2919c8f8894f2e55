//! Telling a deadlock from a script that boa stopped without an error.
//!
//! boa 0.22 drops an uncatchable error (its loop-iteration and recursion limits) raised while
//! an `await` resumes an async function (`vm/opcode/await`: the resumption's completion is
//! discarded): the function neither finishes nor waits for anything, its promise stays pending,
//! and the run looks deadlocked. A resumed function that goes on registers a reaction (it awaits
//! again), queues jobs (it settled a promise someone awaits) or calls the host; a promise job
//! that ran long and did none of that was stopped by the loop limit. A runaway recursion stops
//! as quickly as plain promise plumbing runs, so it cannot be told from a deadlock: the deadlock
//! message names it as the other possible cause.

use std::cell::Cell;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use boa_engine::job::{Job, JobExecutor, SimpleJobExecutor};
use boa_engine::{Context, JsResult};
use smol_durable_core::{ScriptError, ScriptErrorKind};

/// A promise job that ran this long without doing anything was stopped by the loop limit (even
/// an empty loop takes a good part of a second to reach 20 million iterations in a release
/// build; promise plumbing takes microseconds).
const LOOP_LIMIT_HINT: Duration = Duration::from_millis(50);

thread_local! {
    /// Things a running job does when its function goes on: reactions registered, jobs
    /// queued.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// A built-in job (an `await` resuming its function, among others) ran long and did
    /// nothing: a loop limit stopped part of the script (which may have gone on elsewhere).
    static STOPPED_IN_A_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Starts an evaluation with nothing observed.
pub(crate) fn reset() {
    ACTIVITY.with(|activity| activity.set(0));
    STOPPED_IN_A_LOOP.with(|stopped| stopped.set(false));
}

/// Counts something a running job did (a reaction registered, a job queued).
pub(crate) fn active() {
    ACTIVITY.with(|activity| activity.set(activity.get().wrapping_add(1)));
}

/// Runs a job's callback, noting a built-in one that ran long and did nothing. User callbacks
/// report their own errors.
pub(crate) fn observe<T>(built_in: bool, run: impl FnOnce() -> T) -> T {
    let before = ACTIVITY.with(Cell::get);
    let started = Instant::now();
    let result = run();
    let idle = ACTIVITY.with(Cell::get) == before;
    if built_in && idle && started.elapsed() >= LOOP_LIMIT_HINT {
        STOPPED_IN_A_LOOP.with(|stopped| stopped.set(true));
    }
    result
}

/// When the run looks deadlocked: the error boa lost, when a loop limit stopped the script.
pub(crate) fn diagnose() -> Option<ScriptError> {
    STOPPED_IN_A_LOOP.with(Cell::get).then(|| {
        ScriptError::new(
            ScriptErrorKind::Limit,
            "the workflow exceeded the JavaScript loop iteration limit after an await (a loop \
             that does not end?)",
        )
    })
}

/// boa's job queue, counting the jobs queued (a settled promise with reactions queues them).
#[derive(Default)]
pub(crate) struct CountingExecutor {
    inner: Rc<SimpleJobExecutor>,
}

impl CountingExecutor {
    /// What stops the queue (called when an evaluation is abandoned).
    pub(crate) fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let token = self.inner.get_cancellation_token();
        move || token.store(true, std::sync::atomic::Ordering::SeqCst)
    }
}

impl JobExecutor for CountingExecutor {
    fn enqueue_job(self: Rc<Self>, job: Job, context: &mut Context) {
        active();
        Rc::clone(&self.inner).enqueue_job(job, context);
        // A script that keeps its queue busy never waits: its host calls are driven from here.
        crate::runtime::drive_while_busy();
    }

    fn run_jobs(self: Rc<Self>, context: &mut Context) -> JsResult<()> {
        Rc::clone(&self.inner).run_jobs(context)
    }

    async fn run_jobs_async(self: Rc<Self>, context: &RefCell<&mut Context>) -> JsResult<()> {
        Rc::clone(&self.inner).run_jobs_async(context).await
    }
}
