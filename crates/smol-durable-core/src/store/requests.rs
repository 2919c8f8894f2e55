//! What a store operation is asked and what it answers: one request type per operation that
//! takes more than an id, and the outcomes that are more than a row.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AttemptRecord, ClaimScope, LedgerEntry, RunRecord, SignalRecord, State, StepKind, StepRecord,
    TaskRecord, WorkflowInfo,
};
use crate::decide::AttemptEnd;
#[cfg(doc)]
use crate::{DurableStore, StoreAdmin};

/// Creates a task and its root run in one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// `task_…`
    pub task_id: String,
    /// `run_…`
    pub run_id: String,
    /// Who may execute it.
    pub claim_scope: ClaimScope,
    /// The creating owner.
    pub owner_id: String,
    /// Task parameters.
    pub params: Value,
    /// Script and defaults.
    pub workflow: WorkflowInfo,
    /// Arguments.
    pub args: Value,
    /// Output-token allowance.
    pub budget_total: Option<u64>,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When set, creating a second task with the same key (in the same scope) returns the first.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub now: i64,
    /// Steps the run starts with, stored as given in the same transaction (a fork's completed
    /// copies, in the order the source reached them); empty for a new run.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Ledger rows stored with them ([`LedgerSource::Copied`](crate::store::LedgerSource::Copied)).
    #[serde(default)]
    pub ledger: Vec<LedgerEntry>,
}

impl NewRun {
    /// A new task + root run with fresh ids.
    pub fn new(
        claim_scope: ClaimScope,
        owner_id: &str,
        workflow: WorkflowInfo,
        args: Value,
        now: i64,
    ) -> Self {
        Self {
            task_id: crate::new_id("task"),
            run_id: crate::new_id("run"),
            claim_scope,
            owner_id: owner_id.to_owned(),
            params: Value::Null,
            workflow,
            args,
            budget_total: None,
            max_attempts: 1,
            idempotency_key: None,
            now,
            steps: Vec::new(),
            ledger: Vec::new(),
        }
    }
}

/// The task and root run as stored after [`DurableStore::create_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRun {
    /// The task.
    pub task: TaskRecord,
    /// The root run.
    pub run: RunRecord,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// Inserts a child run if no run with this id exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewChildRun {
    /// The child's id (fixed in the parent step's input, so reclaims reuse it).
    pub run_id: String,
    /// The root's task.
    pub task_id: String,
    /// The root run.
    pub root_run_id: String,
    /// The calling run.
    pub parent_run_id: String,
    /// The calling `workflow` step.
    pub parent_step_id: String,
    /// Script of the child.
    pub workflow: WorkflowInfo,
    /// Its arguments.
    pub args: Value,
    /// Creation time.
    pub now: i64,
}

/// Which runs [`StoreAdmin::list_runs`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs in these states (any when empty).
    pub states: Vec<State>,
    /// Only root runs.
    pub roots_only: bool,
    /// Only runs whose metadata name contains this text, ignoring the case of ASCII letters
    /// (other letters fold where the database folds them).
    pub name_contains: Option<String>,
    /// Only runs of this task (its root run and children).
    pub task_id: Option<String>,
    /// Only runs created at or after this time.
    pub created_from: Option<i64>,
    /// Only runs created at or before this time.
    pub created_until: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl RunFilter {
    /// Root runs in any state.
    pub fn roots() -> Self {
        Self {
            roots_only: true,
            ..Self::default()
        }
    }
}

/// Starts an attempt on a task: claims the task for `owner_id` and opens attempt `max + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartAttempt {
    /// `attempt_…`
    pub attempt_id: String,
    /// The task to claim.
    pub task_id: String,
    /// Its root run.
    pub run_id: String,
    /// The claiming owner.
    pub owner_id: String,
    /// Lease of task and attempt.
    pub lease_expires_at: i64,
    /// The current holder whose live lease may be taken over (its process is known dead).
    pub take_over_from: Option<String>,
    /// Whether a `failed` or `cancelled` task may start again (a resume); otherwise such a task
    /// is reported as [`AttemptStart::Finished`].
    pub revive: bool,
    /// Now.
    pub now: i64,
}

/// Outcome of [`DurableStore::start_attempt`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttemptStart {
    /// The task is ours; previous `running` attempts were marked failed and the running step
    /// leases of the previous holder (and of this owner) were expired so they can be reclaimed.
    Started(AttemptRecord),
    /// Another owner holds a live lease on the task.
    Busy {
        /// The holder.
        owner_id: String,
        /// Its lease expiry.
        lease_expires_at: i64,
    },
    /// The task is in a terminal state this start may not leave (`completed` always; `failed`
    /// and `cancelled` unless [`StartAttempt::revive`]).
    Finished(State),
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Attempt, run and task completed with this result.
    Completed {
        /// The root run's result.
        result: Value,
    },
    /// The attempt failed; with `retry_at` the task returns to `pending` until then.
    Failed {
        /// `{"message": …}`
        reason: Value,
        /// Not before this time, for another attempt.
        retry_at: Option<i64>,
    },
    /// Attempt, run and task cancelled.
    Cancelled {
        /// `{"message": "workflow cancelled"}`
        reason: Value,
    },
    /// The owner gives the task back unfinished: at shutdown (`not_before: None`, any worker
    /// may continue at once), or parked on a long sleep (not before the sleep's `wakeAt`). The
    /// task becomes `pending`; the attempt is `cancelled`, so it does not count against
    /// `max_attempts`.
    Released {
        /// Earliest time another attempt may start.
        not_before: Option<i64>,
    },
    /// A local run stops at a wait (`--detach-on-wait`): handed back like
    /// [`Released`](Self::Released) until `not_before` (its deadline, or never), and from then
    /// on any worker may continue it (the task's claim scope becomes `runner`); a signal makes it
    /// due at once.
    Detached {
        /// The wait's deadline (`i64::MAX`: none).
        not_before: i64,
    },
}

/// Ends an attempt, fenced by the task still being claimed by `owner_id`: writes what
/// [`end`](Self::end) says to the attempt, its run, its task and the run's unfinished children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishAttempt {
    /// The attempt.
    pub attempt_id: String,
    /// Its task.
    pub task_id: String,
    /// Its root run.
    pub run_id: String,
    /// The owner finishing it.
    pub owner_id: String,
    /// What to write, computed by [`decide::attempt_end`](crate::decide::attempt_end).
    pub end: AttemptEnd,
    /// Now.
    pub now: i64,
}

impl FinishAttempt {
    /// Ends `attempt` (of its task and root run) the way `outcome` says
    /// ([`decide::attempt_end`](crate::decide::attempt_end)). Taking the record, not its ids,
    /// leaves no attempt, task and run ids to mix up.
    pub fn new(
        attempt: &AttemptRecord,
        owner_id: &str,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Self {
        Self {
            attempt_id: attempt.attempt_id.clone(),
            task_id: attempt.task_id.clone(),
            run_id: attempt.run_id.clone(),
            owner_id: owner_id.to_owned(),
            end: crate::decide::attempt_end(outcome),
            now,
        }
    }
}

/// How a child run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunOutcome {
    /// Completed with this value.
    Completed(Value),
    /// Failed with this reason.
    Failed(Value),
    /// Cancelled with this reason.
    Cancelled(Value),
}

/// Inserts a step row if `(run_id, checkpoint_name)` is free; new rows are `running` with
/// `fence = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStep {
    /// `step_…`
    pub step_id: String,
    /// Run.
    pub run_id: String,
    /// Root run.
    pub root_run_id: String,
    /// Kind.
    pub kind: StepKind,
    /// Checkpoint name.
    pub checkpoint_name: String,
    /// Signature hash.
    pub input_signature_hash: String,
    /// Canonical signature.
    pub input_signature_json: String,
    /// Input document.
    pub input: Value,
    /// Claiming owner.
    pub worker_id: String,
    /// Its lease.
    pub lease_expires_at: i64,
    /// Now.
    pub now: i64,
}

impl NewStep {
    /// The row a claim of this step inserts: `running` under the claimer's lease, `fence = 1`.
    pub fn into_claimed_row(self) -> StepRecord {
        StepRecord {
            step_id: self.step_id,
            run_id: self.run_id,
            root_run_id: self.root_run_id,
            kind: self.kind,
            checkpoint_name: self.checkpoint_name,
            input_signature_hash: self.input_signature_hash,
            input_signature_json: self.input_signature_json,
            state: State::Running,
            input: self.input,
            result: None,
            failure_reason: None,
            worker_id: Some(self.worker_id),
            lease_expires_at: Some(self.lease_expires_at),
            fence: 1,
            last_attempt_at: Some(self.now),
            created_at: self.now,
            updated_at: self.now,
        }
    }

    /// The row a [`RecordStep`] of this step inserts: `completed` with `result` at `fence =
    /// 1`, no lease, reached at `self.now` and completed at `completed_at`. A store answers a
    /// record it wrote with this row instead of reading it back.
    pub fn into_completed_row(self, result: Value, completed_at: i64) -> StepRecord {
        StepRecord {
            state: State::Completed,
            result: Some(result),
            lease_expires_at: None,
            updated_at: completed_at,
            ..self.into_claimed_row()
        }
    }
}

/// Outcome of [`DurableStore::insert_step`].
#[derive(Debug, Clone, PartialEq)]
pub enum InsertStep {
    /// The row was inserted (and is ours, `fence = 1`).
    Inserted(StepRecord),
    /// A row already existed; nothing was written.
    Existing(StepRecord),
}

/// A step whose call ran before its row was written (its claim deferred to its completion):
/// the row is inserted already `completed`, at `fence = 1`, with its ledger rows — if
/// `(run_id, checkpoint_name)` is free *and* the attempt that made the call is still
/// `running`. See [`DurableStore::record_step`](super::DurableStore::record_step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordStep {
    /// The row as a claim would have inserted it: `step.now` is when the call was reached (the
    /// row's `created_at`), `step.worker_id` the owner that made it.
    pub step: NewStep,
    /// The attempt that made the call: nothing is written once it is no longer `running` (a
    /// newer attempt opened, or it finished).
    pub attempt_id: String,
    /// The stored result (never a provider's `raw`).
    pub result: Value,
    /// Ledger rows to write with it.
    pub ledger: Vec<LedgerEntry>,
    /// When the call completed (the row's `updated_at`).
    pub now: i64,
}

/// Claims an existing step by compare-and-set on `(state, fence)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimStep {
    /// The step.
    pub step_id: String,
    /// State it must be in.
    pub expected_state: State,
    /// Fence it must carry.
    pub expected_fence: u32,
    /// New holder.
    pub worker_id: String,
    /// New lease.
    pub lease_expires_at: i64,
    /// Now.
    pub now: i64,
}

/// Outcome of a compare-and-set on a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCas {
    /// Written; the row as it now stands.
    Applied(StepRecord),
    /// Not written; the row as it stands (None if it vanished).
    Conflict(Option<StepRecord>),
}

/// Completes a step: compare-and-set on `state = 'running'` and the caller's fence, storing the
/// result and inserting the ledger rows (idempotently on `(root_run_id, source_type,
/// source_id)`) in one transaction. The run's cached
/// `budget_spent` column is refreshed from the ledger when the attempt finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteStep {
    /// The step.
    pub step_id: String,
    /// Fence to compare.
    pub fence: u32,
    /// The stored result (never a provider's `raw`).
    pub result: Value,
    /// Ledger rows to write with it.
    pub ledger: Vec<LedgerEntry>,
    /// Now.
    pub now: i64,
}

/// Marks a step `failed` or `cancelled` under the fence, writing ledger rows for billed usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailStep {
    /// The step.
    pub step_id: String,
    /// Fence to compare.
    pub fence: u32,
    /// `failed` or `cancelled`.
    pub state: State,
    /// `{"message": …}`
    pub reason: Value,
    /// Ledger rows for usage of failed tries.
    pub ledger: Vec<LedgerEntry>,
    /// Now.
    pub now: i64,
}

/// One step lease to extend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLease {
    /// The step.
    pub step_id: String,
    /// The fence the renewer holds.
    pub fence: u32,
    /// New expiry.
    pub lease_expires_at: i64,
}

/// Heartbeat: extends the attempt/task lease and step leases held by `owner_id`, and reports
/// whether cancellation was requested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLeases {
    /// The renewing owner.
    pub owner_id: String,
    /// Task whose lease to extend.
    pub task_id: String,
    /// Attempt whose lease to extend.
    pub attempt_id: String,
    /// Root run (for the cancellation flag).
    pub run_id: String,
    /// New task/attempt expiry.
    pub lease_expires_at: i64,
    /// Steps to extend.
    pub steps: Vec<StepLease>,
    /// Now.
    pub now: i64,
}

/// Outcome of [`DurableStore::renew_leases`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewOutcome {
    /// False when the task is no longer claimed by this owner.
    pub task_held: bool,
    /// Steps whose row no longer carries the renewer's fence in `running` state.
    pub lost_steps: Vec<String>,
    /// Whether cancellation of the run has been requested.
    pub cancel_requested: bool,
}

/// An event with its document as a JSON value, to append as an [`EventRow`]
/// (`EventRow::from(&event)`); the store assigns `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// `evt_…`
    pub event_id: String,
    /// Run it is about.
    pub run_id: String,
    /// Root run.
    pub root_run_id: String,
    /// Attempt.
    pub attempt_id: Option<String>,
    /// Step.
    pub step_id: Option<String>,
    /// Kind (stored as its name, `workflow.log`, …; stored events keep theirs as text:
    /// [`EventRecord::event_type`](super::EventRecord::event_type)).
    pub event_type: crate::EventType,
    /// Document.
    pub payload: Value,
    /// Time.
    pub created_at: i64,
}

/// An event as stores append it: its document already written out as JSON text, once, by
/// whoever emitted it (the engine as it emits, or `EventRow::from(&NewEvent)`). Stores copy
/// the rows they are lent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRow {
    /// `evt_…`
    pub event_id: String,
    /// Run it is about.
    pub run_id: String,
    /// Root run.
    pub root_run_id: String,
    /// Attempt.
    pub attempt_id: Option<String>,
    /// Step.
    pub step_id: Option<String>,
    /// Kind, by name (`workflow.log`, …).
    pub event_type: &'static str,
    /// Document, as the text of one JSON document (a store refuses a batch holding other text).
    pub payload: String,
    /// Time.
    pub created_at: i64,
}

impl EventRow {
    /// The row of an emitted event, under a new id. Its document is written straight from the
    /// event, in the field order sinks print (`type`, `elapsedNanos`, `metadata`, `data`),
    /// without building a JSON tree first.
    pub(crate) fn emitted(
        event: &crate::events::WorkflowEvent,
        run_id: String,
        root_run_id: String,
        attempt_id: Option<String>,
        created_at: i64,
    ) -> Self {
        Self {
            event_id: crate::new_id("evt"),
            run_id,
            root_run_id,
            attempt_id,
            step_id: event.metadata.step_id.clone(),
            event_type: event.event_type.as_str(),
            // Cannot fail: every key is a string and every number finite.
            payload: serde_json::to_string(event).unwrap_or_else(|_| "null".to_owned()),
            created_at,
        }
    }
}

impl From<&NewEvent> for EventRow {
    fn from(event: &NewEvent) -> Self {
        Self {
            event_id: event.event_id.clone(),
            run_id: event.run_id.clone(),
            root_run_id: event.root_run_id.clone(),
            attempt_id: event.attempt_id.clone(),
            step_id: event.step_id.clone(),
            event_type: event.event_type.as_str(),
            payload: event.payload.to_string(),
            created_at: event.created_at,
        }
    }
}

/// Outcome of [`DurableStore::request_cancel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelRequest {
    /// No such run.
    NotFound,
    /// Recorded; the executing owner will notice.
    Requested,
    /// The task was pending: run and task are now `cancelled`.
    CancelledPending,
    /// Already finished in this state; nothing changed.
    AlreadyFinished(State),
}

/// Claims the oldest eligible task of a scope and starts an attempt on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimNextTask {
    /// Scope to claim from (workers claim `runner`; `local` tasks are never claimed this way).
    pub scope: ClaimScope,
    /// Claiming owner.
    pub owner_id: String,
    /// Id for the attempt to open.
    pub attempt_id: String,
    /// Lease.
    pub lease_expires_at: i64,
    /// Now.
    pub now: i64,
}

/// A task claimed by [`DurableStore::claim_next_task`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    /// The task.
    pub task: TaskRecord,
    /// Its root run.
    pub run: RunRecord,
    /// The attempt opened.
    pub attempt: AttemptRecord,
    /// Attempts before this one that count against `max_attempts`
    /// ([`counts_against_max_attempts`](crate::decide::counts_against_max_attempts)).
    pub failed_attempts: u32,
}

/// Stores a signal in a run's mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSignal {
    /// `signal_…`
    pub signal_id: String,
    /// The run it is for.
    pub run_id: String,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
    /// With a key, a second send with the same key (to the same run) stores nothing and
    /// returns the first signal.
    pub idempotency_key: Option<String>,
    /// Now.
    pub now: i64,
}

/// Outcome of [`DurableStore::send_signal`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SignalSend {
    /// Stored; the row as it now stands.
    Stored(SignalRecord),
    /// A signal with this idempotency key was stored before: that one, unchanged.
    Duplicate(SignalRecord),
    /// No run has this id; nothing was stored.
    RunNotFound,
    /// The run has finished in this state; nothing was stored.
    RunFinished(State),
}

/// Consumes a pending signal for a wait step, in one transaction: the signal goes from
/// `pending` to `consumed` and the step from `running` under `fence` to `completed` with
/// `result`, or nothing changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumeSignal {
    /// The signal.
    pub signal_id: String,
    /// The wait step.
    pub step_id: String,
    /// The fence the waiter holds.
    pub fence: u32,
    /// The step's result.
    pub result: Value,
    /// Now.
    pub now: i64,
}

/// Outcome of [`DurableStore::consume_signal`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SignalConsume {
    /// Both written: the step as it now stands.
    Consumed(StepRecord),
    /// The signal is no longer pending (another wait took it, or it was rejected); nothing
    /// was written. The signal as it stands.
    SignalTaken(Option<SignalRecord>),
    /// The step is no longer `running` under the fence; nothing was written. The step as it
    /// stands.
    StepConflict(Option<StepRecord>),
}

/// Which open waits [`StoreAdmin::list_open_waits`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitFilter {
    /// Only the waits of this run.
    pub run_id: Option<String>,
    /// Only the waits of runs of this task (a root run and its children).
    pub task_id: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}
