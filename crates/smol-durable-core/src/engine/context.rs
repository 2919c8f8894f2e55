//! The state one attempt shares across its run tree (root and children): settings, budget,
//! held step leases, cancellation and parking, and the event queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::event_writer::WriterMessage;
use super::shared::EngineShared;
use crate::events::{EventMetadata, EventType, WorkflowEvent};
use crate::script::BudgetSnapshot;
use crate::store::{AttemptRecord, EventRow, RunRecord};
use crate::Error;

/// A step this attempt holds and must keep leased.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldStep {
    pub fence: u32,
    /// Lease beyond the ttl (retry backoff budget).
    pub extra_ms: u64,
    /// An agent call (as opposed to a sleep or a child workflow).
    pub agent: bool,
    /// Its row is in the store (a deferred claim is not yet): only then is its lease renewed.
    pub claimed: bool,
}

/// How the attempt was stopped from outside the script.
#[derive(Debug)]
pub(crate) enum Interruption {
    Cancelled,
    /// Handed back unfinished: by a worker shutting down (any worker continues at once), or
    /// parked on a long sleep (not before it ends).
    Released {
        not_before: Option<i64>,
    },
    /// Stopped at a wait, as the run was started to (`detach_on_wait`).
    Detached {
        not_before: i64,
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

/// What the run tree is doing, for parking: agent calls in flight, and sleeps and waits being
/// waited (by when each ends at the latest; `i64::MAX` for a wait without a deadline).
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

/// State shared by every run (root and children) of one attempt.
#[derive(Debug)]
pub(crate) struct AttemptCtx {
    pub engine: Arc<EngineShared>,
    pub task_id: String,
    pub root_run_id: String,
    pub attempt: AttemptRecord,
    pub settings: RunSettings,
    budget: Mutex<BudgetSnapshot>,
    pub agent_slots: Option<Arc<Semaphore>>,
    held: Mutex<HashMap<String, HeldStep>>,
    pub cancel: CancellationToken,
    pub runner: Option<RunnerAttempt>,
    activity: Mutex<Activity>,
    /// Guards may be dropped on a script engine's own thread; parking checks spawn here.
    runtime: tokio::runtime::Handle,
    interruption: Mutex<Option<Interruption>>,
    rejections: Mutex<Rejections>,
    /// The waits of this attempt's runs, served signals from the store.
    pub mailbox: Arc<super::mailbox::Mailbox>,
    writer: Mutex<mpsc::UnboundedSender<WriterMessage>>,
    started: Instant,
}

/// The typed failures behind the host rejections of this attempt, by rejection id, so a
/// rejection that escapes a script fails its run with the typed error (see
/// [`HostError::rejection_id`](crate::HostError::rejection_id)).
#[derive(Debug, Default)]
struct Rejections {
    next_id: u64,
    errors: HashMap<u64, Error>,
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
    /// Stop at the first wait that finds no signal, handing the run back (see
    /// [`RunRequest::detach_on_wait`](crate::RunRequest::detach_on_wait)).
    pub detach_on_wait: bool,
    /// An offline replay: a claim that would not replay a completed step stops the script.
    pub replay: Option<Arc<super::replay::ReplayRecorder>>,
}

impl AttemptCtx {
    /// The context of an attempt `start_attempt` opened on `run`; its events go to `writer`.
    pub fn new(
        engine: Arc<EngineShared>,
        run: &RunRecord,
        attempt: AttemptRecord,
        settings: RunSettings,
        cancel: CancellationToken,
        runner: Option<RunnerAttempt>,
        writer: mpsc::UnboundedSender<WriterMessage>,
    ) -> Self {
        Self {
            engine,
            task_id: run.task_id.clone(),
            root_run_id: run.run_id.clone(),
            attempt,
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
            rejections: Mutex::new(Rejections::default()),
            mailbox: Arc::default(),
            writer: Mutex::new(writer),
            started: Instant::now(),
        }
    }

    pub fn now(&self) -> i64 {
        self.engine.clock.now_ms()
    }

    pub fn lease_ttl_ms(&self) -> u64 {
        u64::try_from(self.engine.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// When a step lease taken or renewed at `now` ends: the ttl plus the step's `extra_ms`.
    pub fn step_lease_expires_at(&self, now: i64, extra_ms: u64) -> i64 {
        now.saturating_add(i64::try_from(self.lease_ttl_ms()).unwrap_or(i64::MAX))
            .saturating_add(i64::try_from(extra_ms).unwrap_or(i64::MAX))
    }

    pub fn owner_id(&self) -> &str {
        &self.engine.owner_id
    }

    /// The rejection a script sees for the typed failure `error`: `kind` and `message` as the
    /// script sees them, and an id under which the typed error is kept.
    pub fn reject(
        &self,
        kind: crate::HostErrorKind,
        message: impl Into<String>,
        error: Error,
    ) -> crate::HostError {
        let rejection = crate::HostError::new(kind, message);
        let Ok(mut rejections) = self.rejections.lock() else {
            return rejection;
        };
        let id = rejections.next_id;
        rejections.next_id += 1;
        rejections.errors.insert(id, error);
        rejection.with_rejection_id(id)
    }

    /// The stored failure reason of the typed failure behind `rejection`, if it has one.
    pub fn rejection_reason(&self, rejection: &crate::HostError) -> Option<Value> {
        let id = rejection.rejection_id?;
        let rejections = self.rejections.lock().ok()?;
        rejections.errors.get(&id).map(Error::failure_reason)
    }

    /// The rejection a script sees for a limit it hit: a [`ScriptErrorKind::Limit`] failure,
    /// which no worker runs again.
    ///
    /// [`ScriptErrorKind::Limit`]: crate::ScriptErrorKind::Limit
    pub fn reject_limit(&self, message: String) -> crate::HostError {
        let limit = Error::Script(crate::ScriptError::new(
            crate::ScriptErrorKind::Limit,
            message.clone(),
        ));
        self.reject(crate::HostErrorKind::Invalid, message, limit)
    }

    /// The error a failed script fails its run with: the typed failure behind the host
    /// rejection that escaped it, if that is what failed it, else the script error itself.
    pub fn script_failure(&self, error: crate::ScriptError) -> Error {
        let typed = error.rejection_id().and_then(|id| {
            self.rejections
                .lock()
                .ok()
                .and_then(|mut rejections| rejections.errors.remove(&id))
        });
        typed.unwrap_or(Error::Script(error))
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
    pub fn release_task(&self) {
        self.interrupt(Interruption::Released { not_before: None });
    }

    /// Stops the run at a wait and hands it back until `deadline` (or a signal), when the run
    /// was started to detach at waits; returns whether it was.
    pub fn detach_at_wait(&self, deadline: Option<i64>) -> bool {
        if !self.settings.detach_on_wait {
            return false;
        }
        self.interrupt(Interruption::Detached {
            not_before: deadline.unwrap_or(i64::MAX),
        });
        true
    }

    /// Whether the attempt is being handed back (released, parked or detached) rather than
    /// cancelled or failed: its waits and sleeps go on in a later attempt.
    pub fn handing_back(&self) -> bool {
        self.interruption.lock().is_ok_and(|slot| {
            matches!(
                *slot,
                Some(Interruption::Released { .. } | Interruption::Detached { .. })
            )
        })
    }

    /// Marks an agent call in progress until the guard drops.
    pub fn agent_busy(self: &Arc<Self>) -> AgentBusy {
        if let Ok(mut activity) = self.activity.lock() {
            activity.agents += 1;
        }
        AgentBusy(Arc::clone(self))
    }

    /// Marks a wait waiting until the guard drops (at the latest until `deadline`), and
    /// considers parking: for parking, a wait is a sleep that a signal may end early.
    pub fn waiting(self: &Arc<Self>, deadline: Option<i64>) -> Sleeping {
        self.sleeping(deadline.unwrap_or(i64::MAX))
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

    /// When the earliest sleep or wait ends, if the run may be parked now: a worker's run, no
    /// agent call in flight, and every sleep and wait ending at least the threshold ahead.
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

    /// Stops renewing a step's lease (the step finished, or was given up).
    pub fn unhold(&self, step_id: &str) {
        self.unhold_fenced(step_id, None);
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
    pub fn unhold_fenced(&self, step_id: &str, fence: Option<u32>) -> bool {
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
        // An offline replay's events would go to its throwaway store, which nobody reads.
        if self.settings.replay.is_some() {
            return;
        }
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
        let record = EventRow::emitted(
            &event,
            event.metadata.subject_run_id().to_owned(),
            self.root_run_id.clone(),
            Some(self.attempt.attempt_id.clone()),
            self.now(),
        );
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

    /// Takes how the attempt was stopped from outside the script, if it was.
    pub fn take_interruption(&self) -> Option<Interruption> {
        self.interruption
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
    }

    /// Takes every step still held (for closing them when the attempt ends).
    pub fn take_held(&self) -> Vec<(String, HeldStep)> {
        self.held
            .lock()
            .map(|mut map| map.drain().collect())
            .unwrap_or_default()
    }

    /// The steps held now, with their fences and extra lease (for the heartbeat).
    pub fn held_steps(&self) -> Vec<(String, HeldStep)> {
        self.held
            .lock()
            .map(|map| map.iter().map(|(id, held)| (id.clone(), *held)).collect())
            .unwrap_or_default()
    }

    /// Flushes the events queued so far and stops the writer.
    pub async fn close_events(&self) {
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

pub(crate) fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
