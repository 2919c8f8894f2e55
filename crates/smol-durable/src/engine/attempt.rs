//! One attempt at a root run: the shared state of its run tree, the lease heartbeat, the
//! ordered event writer, and the end-of-attempt bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::host::RunScope;
use super::{EngineShared, RunOutput, TokenUsage};
use crate::decide::heartbeat_interval_ms;
use crate::events::{EventMetadata, EventType, WorkflowEvent};
use crate::script::{BudgetSnapshot, ScriptInvocation, WorkflowSource};
use crate::store::{
    AttemptOutcome, AttemptRecord, FailStep, FinishAttempt, NewEvent, RenewLeases, RunRecord,
    State, StepLease,
};
use crate::{Error, ScriptError, ScriptErrorKind, StoreErrorKind};

/// A step this attempt holds and must keep leased.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldStep {
    pub fence: u32,
    /// Lease beyond the ttl (retry backoff budget).
    pub extra_ms: u64,
    /// An agent call (as opposed to a sleep or a child workflow).
    pub agent: bool,
}

/// How the attempt was stopped from outside the script.
#[derive(Debug)]
enum Interruption {
    Cancelled,
    /// Handed back unfinished: by a worker shutting down (any worker continues at once), or
    /// parked on a long sleep (not before it ends).
    Released {
        not_before: Option<i64>,
    },
    Fatal(Error),
}

/// How a worker's attempt at a runner task ends when it fails or must stop.
#[derive(Debug, Clone)]
pub(crate) struct RunnerAttempt {
    /// Attempts the task may have in all.
    pub max_attempts: u32,
    /// Backoff before the second attempt (doubling after).
    pub retry_backoff_ms: u64,
    /// Fired by the worker to hand the task back unfinished.
    pub release: CancellationToken,
    /// Attempts of the task that failed before this one (they count against `max_attempts`).
    pub failed_before: u32,
    /// Park the run when nothing but sleeps ending at least this far ahead remains.
    pub park_after_ms: Option<u64>,
}

/// How long the script must stay quiet (no agent call starts) before a run is parked: the
/// script may be about to make another call in the same turn.
const PARK_SETTLE: Duration = Duration::from_millis(100);

/// What the run tree is doing, for parking: agent calls in flight and sleeps being waited.
#[derive(Debug, Default)]
struct Activity {
    agents: usize,
    sleeps: HashMap<u64, i64>,
    next_sleep: u64,
}

/// Held while an agent call is in progress; a run is never parked under one.
pub(crate) struct AgentBusy(Arc<AttemptCtx>);

impl Drop for AgentBusy {
    fn drop(&mut self) {
        if let Ok(mut activity) = self.0.activity.lock() {
            activity.agents = activity.agents.saturating_sub(1);
        }
        self.0.consider_parking();
    }
}

/// Held while a sleep waits for its `wakeAt`.
pub(crate) struct Sleeping(Arc<AttemptCtx>, u64);

impl Drop for Sleeping {
    fn drop(&mut self) {
        if let Ok(mut activity) = self.0.activity.lock() {
            activity.sleeps.remove(&self.1);
        }
    }
}

enum WriterMessage {
    Event(Box<(NewEvent, WorkflowEvent)>),
    /// Flush, then stop: the attempt is over even if stray copies of its context live on.
    Close(oneshot::Sender<()>),
}

/// State shared by every run (root and children) of one attempt.
#[derive(Debug)]
pub(crate) struct AttemptCtx {
    pub engine: Arc<EngineShared>,
    pub task_id: String,
    pub root_run_id: String,
    pub attempt: AttemptRecord,
    pub settings: RunSettings,
    pub budget: Mutex<BudgetSnapshot>,
    pub agent_slots: Option<Arc<Semaphore>>,
    pub held: Mutex<HashMap<String, HeldStep>>,
    pub cancel: CancellationToken,
    runner: Option<RunnerAttempt>,
    activity: Mutex<Activity>,
    /// Guards may be dropped on a script engine's own thread; parking checks spawn here.
    runtime: tokio::runtime::Handle,
    interruption: Mutex<Option<Interruption>>,
    writer: Mutex<mpsc::UnboundedSender<WriterMessage>>,
    started: Instant,
}

/// Defaults in force for this attempt (stored with the run, overridable on resume).
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub provider: String,
    pub model_map: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub budget_total: Option<u64>,
    pub max_parallel_agents: Option<usize>,
    /// The rules that named the run's steps (see [`crate::agent_options::StepIdentity`]).
    pub step_identity: crate::agent_options::StepIdentity,
}

impl AttemptCtx {
    pub fn now(&self) -> i64 {
        self.engine.clock.now_ms()
    }

    pub fn lease_ttl_ms(&self) -> u64 {
        u64::try_from(self.engine.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn owner_id(&self) -> &str {
        &self.engine.owner_id
    }

    /// Records an error that must fail the run even if the script catches the rejection
    /// (store failures, fencing, signature mismatch), and stops the script.
    pub fn fail_fatally(&self, error: Error) {
        if let Ok(mut slot) = self.interruption.lock() {
            if !matches!(*slot, Some(Interruption::Fatal(_))) {
                *slot = Some(Interruption::Fatal(error));
            }
        }
        self.cancel.cancel();
    }

    /// Cancels the run cooperatively.
    pub fn request_cancel(&self) {
        self.interrupt(Interruption::Cancelled);
    }

    /// Stops the script and hands the task back unfinished.
    fn release_task(&self) {
        self.interrupt(Interruption::Released { not_before: None });
    }

    /// Marks an agent call in progress until the guard drops.
    pub fn agent_busy(self: &Arc<Self>) -> AgentBusy {
        if let Ok(mut activity) = self.activity.lock() {
            activity.agents += 1;
        }
        AgentBusy(Arc::clone(self))
    }

    /// Marks a sleep waiting for `wake_at` until the guard drops, and considers parking.
    pub fn sleeping(self: &Arc<Self>, wake_at: i64) -> Sleeping {
        let id = match self.activity.lock() {
            Ok(mut activity) => {
                activity.next_sleep += 1;
                let id = activity.next_sleep;
                activity.sleeps.insert(id, wake_at);
                id
            }
            Err(_) => 0,
        };
        self.consider_parking();
        Sleeping(Arc::clone(self), id)
    }

    /// When the earliest sleep ends, if the run may be parked now: a worker's run, no agent
    /// call in flight, and every sleep ending at least the threshold ahead.
    fn parkable(&self) -> Option<i64> {
        let after = self.runner.as_ref()?.park_after_ms?;
        let activity = self.activity.lock().ok()?;
        if activity.agents > 0 {
            return None;
        }
        let earliest = activity.sleeps.values().copied().min()?;
        let ahead = earliest.saturating_sub(self.now());
        (u64::try_from(ahead).unwrap_or(0) >= after).then_some(earliest)
    }

    /// Parks the run if it stays parkable for [`PARK_SETTLE`].
    fn consider_parking(self: &Arc<Self>) {
        if self.parkable().is_none() || self.cancel.is_cancelled() {
            return;
        }
        let ctx = Arc::clone(self);
        self.runtime.spawn(async move {
            tokio::time::sleep(PARK_SETTLE).await;
            if let Some(until) = ctx.parkable() {
                tracing::info!(until, "only a long sleep remains; parking the run");
                ctx.interrupt(Interruption::Released {
                    not_before: Some(until),
                });
            }
        });
    }

    fn interrupt(&self, why: Interruption) {
        if let Ok(mut slot) = self.interruption.lock() {
            if slot.is_none() {
                *slot = Some(why);
            }
        }
        self.cancel.cancel();
    }

    pub fn hold(&self, step_id: &str, held: HeldStep) {
        if let Ok(mut map) = self.held.lock() {
            map.insert(step_id.to_owned(), held);
        }
    }

    pub fn release(&self, step_id: &str) {
        self.release_fence(step_id, None);
    }

    /// Whether an agent call of this attempt is still in flight.
    pub fn holds_agent_calls(&self) -> bool {
        self.held
            .lock()
            .map(|map| map.values().any(|held| held.agent))
            .unwrap_or(false)
    }

    /// Drops the hold on a step; with a fence, only if the hold still carries it. Returns
    /// whether a hold was dropped.
    pub fn release_fence(&self, step_id: &str, fence: Option<u32>) -> bool {
        let Ok(mut map) = self.held.lock() else {
            return false;
        };
        if fence.is_none() || map.get(step_id).map(|held| held.fence) == fence {
            return map.remove(step_id).is_some();
        }
        false
    }

    pub fn budget(&self) -> BudgetSnapshot {
        self.budget.lock().map(|b| *b).unwrap_or(BudgetSnapshot {
            total: self.settings.budget_total,
            spent: 0,
        })
    }

    pub fn add_spent(&self, tokens: u64) {
        if let Ok(mut budget) = self.budget.lock() {
            budget.spent = budget.spent.saturating_add(tokens);
        }
    }

    /// Queues an event; the writer appends events to the store in this order, then fans them
    /// out to sinks and the run handle.
    pub fn emit(
        &self,
        event_type: EventType,
        metadata: EventMetadata,
        data: serde_json::Map<String, Value>,
    ) {
        let mut event = WorkflowEvent::new(event_type, metadata);
        event.data = data;
        crate::events::bound_event_data(
            &mut event.data,
            self.engine.limits.max_event_payload_bytes,
        );
        let is_root_start = event_type == EventType::Started && event.metadata.workflow_depth == 0;
        // Stamped and queued under one lock, so `elapsedNanos` never decreases along the stream.
        let Ok(writer) = self.writer.lock() else {
            return;
        };
        if !is_root_start {
            event.elapsed_nanos =
                Some(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        let record = NewEvent {
            event_id: crate::new_id("evt"),
            run_id: event.metadata.subject_run_id().to_owned(),
            root_run_id: self.root_run_id.clone(),
            attempt_id: Some(self.attempt.attempt_id.clone()),
            step_id: event.metadata.step_id.clone(),
            event_type: event_type.as_str().to_owned(),
            payload: event.to_json(),
            created_at: self.now(),
        };
        let _ = writer.send(WriterMessage::Event(Box::new((record, event))));
    }

    pub fn metadata(
        &self,
        run_id: &str,
        depth: u32,
        parent_step_id: Option<&str>,
    ) -> EventMetadata {
        EventMetadata {
            run_id: self.root_run_id.clone(),
            workflow_run_id: (run_id != self.root_run_id).then(|| run_id.to_owned()),
            attempt_id: Some(self.attempt.attempt_id.clone()),
            workflow_depth: depth,
            parent_step_id: parent_step_id.map(str::to_owned),
            ..EventMetadata::default()
        }
    }

    async fn close_events(&self) {
        let (done, wait) = oneshot::channel();
        let sent = match self.writer.lock() {
            Ok(writer) => writer.send(WriterMessage::Close(done)).is_ok(),
            Err(_) => false,
        };
        if sent {
            let _ = wait.await;
        }
    }
}

/// Everything needed to execute an attempt that `start_attempt` opened.
pub(crate) struct AttemptPlan {
    pub engine: Arc<EngineShared>,
    pub run: RunRecord,
    pub attempt: AttemptRecord,
    pub source: WorkflowSource,
    pub settings: RunSettings,
    pub cancel: CancellationToken,
    pub handle_events: Option<mpsc::UnboundedSender<WorkflowEvent>>,
    /// Set when a worker claimed a runner task.
    pub runner: Option<RunnerAttempt>,
}

/// Executes the attempt to its end and records the outcome.
pub(crate) async fn execute(plan: AttemptPlan) -> Result<RunOutput, Error> {
    let AttemptPlan {
        engine,
        run,
        attempt,
        source,
        settings,
        cancel,
        handle_events,
        runner,
    } = plan;
    let (writer, inbox) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_events(Arc::clone(&engine), inbox, handle_events));
    let ctx = Arc::new(AttemptCtx {
        engine: Arc::clone(&engine),
        task_id: run.task_id.clone(),
        root_run_id: run.run_id.clone(),
        attempt: attempt.clone(),
        budget: Mutex::new(BudgetSnapshot {
            total: settings.budget_total,
            spent: 0,
        }),
        agent_slots: settings
            .max_parallel_agents
            .map(|cap| Arc::new(Semaphore::new(cap.max(1)))),
        settings,
        held: Mutex::new(HashMap::new()),
        cancel,
        runner,
        activity: Mutex::new(Activity::default()),
        runtime: tokio::runtime::Handle::current(),
        interruption: Mutex::new(None),
        writer: Mutex::new(writer),
        started: Instant::now(),
    });
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&ctx)));
    let cancel_watch = tokio::spawn(watch_for_cancel(Arc::clone(&ctx)));
    let release = ctx.runner.as_ref().map(|runner| {
        let (token, ctx) = (runner.release.clone(), Arc::clone(&ctx));
        tokio::spawn(async move {
            token.cancelled().await;
            ctx.release_task();
        })
    });
    let outcome = run_root(&ctx, &run, source).await;
    heartbeat.abort();
    cancel_watch.abort();
    if let Some(release) = release {
        release.abort();
    }
    let result = finish(&ctx, &run, outcome).await;
    ctx.close_events().await;
    drop(ctx);
    let _ = writer_task.await;
    result
}

async fn run_root(
    ctx: &Arc<AttemptCtx>,
    run: &RunRecord,
    source: WorkflowSource,
) -> Result<Value, Error> {
    // What earlier attempts spent is in the ledger; a resumed run continues from there.
    let spent = ctx.engine.store.budget_spent(&run.run_id).await?;
    ctx.add_spent(spent);
    let scope = RunScope::root(Arc::clone(ctx), run, &source).await?;
    scope.emit(
        EventType::Started,
        None,
        json!({ "startTime": crate::clock::rfc3339_ms(ctx.now()) }),
    );
    let invocation = ScriptInvocation {
        source,
        args: run.args.clone(),
        host: Arc::new(scope.host()),
        cancel: ctx.cancel.clone(),
    };
    // A panicking engine fails this run, not the host.
    let evaluation = AssertUnwindSafe(ctx.engine.scripts.evaluate(invocation))
        .catch_unwind()
        .map(|outcome| match outcome {
            Ok(result) => result,
            Err(panic) => Err(ScriptError::new(
                ScriptErrorKind::Internal,
                format!("the script engine panicked: {}", panic_message(&panic)),
            )),
        });
    tokio::pin!(evaluation);
    tokio::select! {
        result = &mut evaluation => result.map_err(Error::from),
        () = ctx.cancel.cancelled() => {
            // Host calls now reject; give the script a moment to unwind on its own. With a
            // session-log sink, agent calls in flight are let finish (their transcripts are
            // saved and their results kept), however long that takes.
            let grace = ctx.engine.limits.cancel_grace;
            loop {
                match tokio::time::timeout(grace, &mut evaluation).await {
                    Ok(result) => break result.map_err(Error::from),
                    Err(_) if ctx.engine.session_sink.is_some() && ctx.holds_agent_calls() => {}
                    Err(_) => break Err(Error::Cancelled),
                }
            }
        }
    }
}

async fn finish(
    ctx: &Arc<AttemptCtx>,
    run: &RunRecord,
    outcome: Result<Value, Error>,
) -> Result<RunOutput, Error> {
    let now = ctx.now();
    let interruption = ctx
        .interruption
        .lock()
        .ok()
        .and_then(|mut slot| slot.take());
    // The token also fires from the run handle and `Engine::cancel`, which only cancel. A
    // release that came too late to stop the script does not undo its result.
    let outcome = match (interruption, outcome) {
        (Some(Interruption::Released { .. }), Ok(result)) => Ok(result),
        (Some(Interruption::Released { not_before: None }), Err(_)) => Err(Error::Released),
        (
            Some(Interruption::Released {
                not_before: Some(until),
            }),
            Err(_),
        ) => Err(Error::Parked { until }),
        (Some(Interruption::Fatal(error)), _) => Err(error),
        (Some(Interruption::Cancelled), _) => Err(Error::Cancelled),
        (None, _) if ctx.cancel.is_cancelled() => Err(Error::Cancelled),
        (None, outcome) => outcome,
    };
    let max_result = ctx.engine.limits.max_result_bytes;
    let outcome = outcome.and_then(|result| {
        match crate::limits::oversized(
            "the workflow result",
            &result,
            max_result,
            crate::limits::RESULT_LIMIT,
        ) {
            Some(message) => Err(Error::Script(crate::ScriptError::new(
                crate::ScriptErrorKind::Limit,
                message,
            ))),
            None => Ok(result),
        }
    });
    // The outcome is fixed: host calls a script engine left running (un-awaited agents,
    // dropped evaluations) now reject instead of spending more.
    ctx.cancel.cancel();
    release_held_steps(ctx, matches!(outcome, Err(Error::Cancelled))).await;
    let root_meta = ctx.metadata(&run.run_id, 0, None);
    match outcome {
        Ok(result) => {
            let completed = AttemptOutcome::Completed {
                result: run.completed_payload_of(result.clone()),
            };
            record_end(ctx, run, completed, now).await?;
            // The result is stored; usage is reporting only and must not undo that.
            let usage = token_usage(ctx).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read token usage");
                TokenUsage::default()
            });
            let data = json!({ "results": result, "tokenUsage": usage });
            ctx.emit(EventType::Result, root_meta, object(data));
            Ok(RunOutput {
                task_id: ctx.task_id.clone(),
                run_id: run.run_id.clone(),
                attempt: ctx.attempt.attempt,
                result,
                token_usage: usage,
            })
        }
        Err(error) => {
            let reason = json!({ "message": error.to_string() });
            let outcome = match &error {
                Error::Cancelled => AttemptOutcome::Cancelled { reason },
                Error::Released => AttemptOutcome::Released { not_before: None },
                Error::Parked { until } => AttemptOutcome::Released {
                    not_before: Some(*until),
                },
                _ => AttemptOutcome::Failed {
                    reason,
                    retry_at: ctx.runner.as_ref().and_then(|runner| {
                        crate::decide::attempt_retry_at(
                            &error,
                            runner.failed_before + 1,
                            runner.max_attempts,
                            runner.retry_backoff_ms,
                            now,
                        )
                    }),
                },
            };
            let recorded = record_end(ctx, run, outcome, now).await;
            ctx.emit(
                EventType::Error,
                root_meta,
                object(json!({ "message": error.to_string() })),
            );
            match recorded {
                Err(lost @ Error::LeaseLost(_)) => Err(lost),
                Err(store_error) => {
                    tracing::error!(%store_error, %error, "could not record the end of a failed attempt");
                    Err(error)
                }
                Ok(()) => Err(error),
            }
        }
    }
}

/// Records how the attempt ended; another owner having taken the task over is `LeaseLost`.
async fn record_end(
    ctx: &AttemptCtx,
    run: &RunRecord,
    outcome: AttemptOutcome,
    now: i64,
) -> Result<(), Error> {
    let finished = ctx
        .engine
        .store
        .finish_attempt(FinishAttempt::new(
            &ctx.attempt.attempt_id,
            &ctx.task_id,
            &run.run_id,
            ctx.owner_id(),
            &outcome,
            now,
        ))
        .await;
    match finished {
        Err(error) if error.kind() == StoreErrorKind::LeaseLost => {
            Err(Error::LeaseLost(error.to_string()))
        }
        other => Ok(other?),
    }
}

/// Steps still held when the script ended (e.g. `Promise.all` rejected while siblings ran) are
/// released so the next attempt reclaims them at once instead of waiting for their lease.
async fn release_held_steps(ctx: &AttemptCtx, cancelled: bool) {
    let held: Vec<(String, HeldStep)> = ctx
        .held
        .lock()
        .map(|mut map| map.drain().collect())
        .unwrap_or_default();
    let (state, message) = if cancelled {
        (State::Cancelled, "workflow cancelled")
    } else {
        (State::Failed, "the attempt ended before this step finished")
    };
    for (step_id, step) in held {
        let released = ctx
            .engine
            .store
            .fail_step(FailStep {
                step_id: step_id.clone(),
                fence: step.fence,
                state: state.clone(),
                reason: json!({ "message": message }),
                ledger: Vec::new(),
                now: ctx.now(),
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(%step_id, %error, "could not release a step at the end of the attempt");
        }
    }
}

async fn token_usage(ctx: &AttemptCtx) -> Result<TokenUsage, Error> {
    ledger_usage(ctx.engine.store.as_ref(), &ctx.root_run_id).await
}

/// Token usage of a root run, summed over its ledger (so it spans every attempt).
pub(crate) async fn ledger_usage(
    store: &dyn crate::DurableStore,
    root_run_id: &str,
) -> Result<TokenUsage, Error> {
    let entries = store.ledger_entries(root_run_id).await?;
    Ok(sum_usage(entries.iter()))
}

/// Token usage of one run of a root run's tree (a child's own calls).
pub(crate) async fn run_usage(
    store: &dyn crate::DurableStore,
    root_run_id: &str,
    run_id: &str,
) -> Result<TokenUsage, Error> {
    let entries = store.ledger_entries(root_run_id).await?;
    Ok(sum_usage(
        entries.iter().filter(|entry| entry.run_id == run_id),
    ))
}

fn sum_usage<'a>(entries: impl Iterator<Item = &'a crate::store::LedgerEntry>) -> TokenUsage {
    let mut usage = TokenUsage::default();
    for entry in entries {
        let reported = entry.tokens();
        let input = reported.input_tokens.unwrap_or(0);
        // smol-wf's run total: the reported one, else input, output and cache writes (cache
        // reads are not added here, unlike `history`'s per-step total: smol-wf did the same).
        let total = reported.total_tokens.unwrap_or_else(|| {
            input
                .saturating_add(entry.output_tokens)
                .saturating_add(reported.cache_write_tokens.unwrap_or(0))
        });
        usage.input_tokens = usage.input_tokens.saturating_add(input);
        usage.output_tokens = usage.output_tokens.saturating_add(entry.output_tokens);
        usage.total_tokens = usage.total_tokens.saturating_add(total);
    }
    usage
}

/// Renews the task, attempt and held step leases every ttl/3 and watches for cancellation.
async fn heartbeat(ctx: Arc<AttemptCtx>) {
    let interval = Duration::from_millis(heartbeat_interval_ms(ctx.lease_ttl_ms()));
    let ttl = i64::try_from(ctx.lease_ttl_ms()).unwrap_or(i64::MAX);
    let mut last_renewed = ctx.now();
    loop {
        crate::clock::sleep_for(ctx.engine.clock.as_ref(), interval).await;
        let now = ctx.now();
        let steps: Vec<StepLease> = ctx
            .held
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(step_id, held)| StepLease {
                        step_id: step_id.clone(),
                        fence: held.fence,
                        lease_expires_at: now
                            .saturating_add(ttl)
                            .saturating_add(i64::try_from(held.extra_ms).unwrap_or(i64::MAX)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sent: Vec<(String, u32)> = steps.iter().map(|s| (s.step_id.clone(), s.fence)).collect();
        let renewed = ctx
            .engine
            .store
            .renew_leases(RenewLeases {
                owner_id: ctx.owner_id().to_owned(),
                task_id: ctx.task_id.clone(),
                attempt_id: ctx.attempt.attempt_id.clone(),
                run_id: ctx.root_run_id.clone(),
                lease_expires_at: now.saturating_add(ttl),
                steps,
                now,
            })
            .await;
        match renewed {
            Ok(outcome) => {
                if !outcome.task_held {
                    ctx.fail_fatally(Error::LeaseLost(format!(
                        "task {} is no longer held by {}",
                        ctx.task_id,
                        ctx.owner_id()
                    )));
                    return;
                }
                for step_id in outcome.lost_steps {
                    // Someone else owns it now; our completion will be fenced off. Only the
                    // hold renewed here is dropped: the step may have been claimed again since.
                    // A step that finished while the renewal was on its way is no news.
                    let fence = sent.iter().find(|(id, _)| *id == step_id).map(|(_, f)| *f);
                    if ctx.release_fence(&step_id, fence) {
                        tracing::warn!(%step_id, "step lease lost");
                    }
                }
                if outcome.cancel_requested {
                    ctx.request_cancel();
                }
                last_renewed = now;
            }
            // A failed renewal is retried on the next beat while the lease still holds; once it
            // may have expired, another owner may be running this attempt's steps: stop.
            Err(error) => {
                tracing::warn!(%error, "lease renewal failed");
                if now.saturating_sub(last_renewed) >= ttl {
                    ctx.fail_fatally(Error::LeaseLost(format!(
                        "could not renew the lease of task {} for {ttl} ms: {error}",
                        ctx.task_id
                    )));
                    return;
                }
            }
        }
    }
}

/// Reads the root run every [`Limits::cancel_poll`](super::Limits::cancel_poll) and cancels the
/// run when another process asked for it: sooner than the next heartbeat, so no new agent call
/// starts and a sleep stops within that time.
async fn watch_for_cancel(ctx: Arc<AttemptCtx>) {
    let poll = ctx.engine.limits.cancel_poll;
    loop {
        crate::clock::sleep_for(ctx.engine.clock.as_ref(), poll).await;
        match ctx.engine.store.get_run(&ctx.root_run_id).await {
            Ok(Some(run)) if run.cancel_requested_at.is_some() => {
                ctx.request_cancel();
                return;
            }
            Ok(_) => {}
            // The heartbeat reports a store in trouble; this only looks for cancellations.
            Err(error) => tracing::debug!(%error, "could not look for a cancellation"),
        }
    }
}

async fn write_events(
    engine: Arc<EngineShared>,
    mut inbox: mpsc::UnboundedReceiver<WriterMessage>,
    handle: Option<mpsc::UnboundedSender<WorkflowEvent>>,
) {
    let mut batch = Vec::new();
    let mut closing = false;
    while let Some(first) = inbox.recv().await {
        let mut flushes = Vec::new();
        let mut pending = vec![first];
        while let Ok(next) = inbox.try_recv() {
            pending.push(next);
        }
        for message in pending {
            match message {
                WriterMessage::Event(event) => batch.push(*event),
                WriterMessage::Close(done) => {
                    flushes.push(done);
                    closing = true;
                }
            }
        }
        if !batch.is_empty() {
            let records = batch.iter().map(|(record, _)| record.clone()).collect();
            if let Err(error) = engine.store.append_events(records).await {
                tracing::warn!(%error, "could not store workflow events");
            }
            for (_, event) in batch.drain(..) {
                for sink in &engine.event_sinks {
                    sink.emit(&event).await;
                }
                if let Some(handle) = &handle {
                    let _ = handle.send(event);
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closing {
            return;
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

pub(crate) fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LedgerEntry;
    use crate::Usage;

    fn billed(usage: Usage) -> LedgerEntry {
        LedgerEntry::new(
            "run",
            "run",
            "step",
            "agent_step",
            "s".into(),
            Some(&usage),
            0,
        )
    }

    #[test]
    fn a_run_s_total_is_the_reported_one_else_input_output_and_cache_writes() {
        let reported = Usage {
            total_tokens: Some(100),
            ..Usage::tokens(3, 4)
        };
        let cached = Usage {
            total_tokens: None,
            cache_read_tokens: Some(50),
            cache_write_tokens: Some(7),
            ..Usage::tokens(3, 4)
        };
        let huge = Usage::tokens(u64::MAX, u64::MAX);
        let entries = [billed(reported), billed(cached)];
        let usage = sum_usage(entries.iter());
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (6, 8, 100 + 3 + 4 + 7)
        );
        let entries = [billed(huge.clone()), billed(huge)];
        assert_eq!(sum_usage(entries.iter()).total_tokens, u64::MAX);
    }
}
