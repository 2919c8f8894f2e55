//! The storage contract: small atomic operations, no decisions.
//!
//! A [`DurableStore`] never decides whether a step replays, runs, waits or is reclaimed; the
//! core does that in [`decide`](crate::decide) and then asks the store for one of the operations
//! below. Each operation must be atomic on its own (one transaction, or one lock), and every
//! compare-and-set must compare exactly what its request names. The conformance suite in
//! `smol-durable-testkit` states these guarantees as tests; a store is correct when it passes.

mod memory;
mod records;
mod retry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use memory::MemoryStore;
pub use records::{
    AttemptRecord, ClaimScope, EventRecord, LedgerEntry, OwnerRecord, RunRecord, State, StepKind,
    StepRecord, TaskRecord, WorkflowInfo,
};
pub use retry::{RetryingStore, StoreRetryPolicy};

use crate::decide::AttemptEnd;
use crate::{StoreError, StoreErrorKind};

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a store can do beyond the contract. The conformance suite selects cases by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// [`DurableStore::step_finished`] and [`DurableStore::work_available`] resolve on change
    /// (PostgreSQL's `LISTEN/NOTIFY`), so waiters need not poll.
    pub notify: bool,
}

impl StoreCapabilities {
    /// No extra capabilities.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets [`StoreCapabilities::notify`].
    pub fn with_notify(mut self, yes: bool) -> Self {
        self.notify = yes;
        self
    }
}

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

/// Which runs [`DurableStore::list_runs`] returns, newest first.
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
    /// Ends `attempt_id` the way `outcome` says ([`decide::attempt_end`](crate::decide::attempt_end)).
    pub fn new(
        attempt_id: &str,
        task_id: &str,
        run_id: &str,
        owner_id: &str,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Self {
        Self {
            attempt_id: attempt_id.to_owned(),
            task_id: task_id.to_owned(),
            run_id: run_id.to_owned(),
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

/// Outcome of [`DurableStore::insert_step`].
#[derive(Debug, Clone, PartialEq)]
pub enum InsertStep {
    /// The row was inserted (and is ours, `fence = 1`).
    Inserted(StepRecord),
    /// A row already existed; nothing was written.
    Existing(StepRecord),
}

/// Claims an existing step by compare-and-set on `(state, attempts)`.
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

/// Completes a step: compare-and-set on `state = 'running' AND fence = <the caller's>`, storing the result and inserting the ledger rows (idempotently on
/// `(root_run_id, source_type, source_id)`) in one transaction. The run's cached
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

/// An event to append; the store assigns `seq`.
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
    /// Type.
    pub event_type: String,
    /// Document.
    pub payload: Value,
    /// Time.
    pub created_at: i64,
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

/// The error every store returns when asked to delete a task that has not finished, so the
/// message is the same on every backend.
pub fn unfinished_task(task_id: &str, state: &State) -> StoreError {
    StoreError::new(
        StoreErrorKind::Conflict,
        "delete_task",
        format!("task {task_id} is {state}; only finished runs can be deleted (cancel it first)"),
    )
}

/// The error every store returns when its schema has a migration newer than the binary knows,
/// so the message is the same on every backend. `place` names what holds the schema ("the
/// database", "schema app").
pub fn newer_schema(place: &str, newest: i64, known: i64) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unsupported,
        "migrate",
        format!(
            "{place} has schema migration {newest}, newer than this smol-durable knows \
             (up to {known}); upgrade smol-durable to open it (nothing was changed)"
        ),
    )
}

/// Durable storage of tasks, runs, attempts, steps, the budget ledger, events and owners: the
/// operations a run's execution needs. Listing and administration are [`StoreAdmin`].
///
/// # The contract
///
/// - **Atomic.** Every method is one transaction (or one lock): another handle on the same
///   database — another thread, process or machine — sees all of a call's writes or none.
/// - **Compare exactly what is named.** Every compare-and-set compares the fields its request
///   names (`state`, `attempts` as the fence, the owner) and, when it loses, changes nothing and
///   returns the row as it stands, so the caller can decide again
///   ([`decide`](crate::decide)).
/// - **No rules of its own.** A store decides nothing: where an operation needs a rule
///   (who may open an attempt, whether a claimed task runs, what a cancellation does), it calls
///   the one [`decide`](crate::decide) function for it inside its transaction; every reason
///   text it writes comes from [`decide::Closure`](crate::decide::Closure) or the request.
/// - **Durable on success.** When a write returns `Ok`, it survives a crash of this process
///   (and, for the stores that promise it, of the machine).
/// - **Errors by kind.** [`StoreErrorKind::Unavailable`] for a lost connection or a locked or
///   overloaded database (the engine retries it), `Corrupt` for a malformed row (naming what
///   and where), `NotFound`, `Conflict`, `LeaseLost`, `Unsupported`.
/// - **Shareable.** Implementations are `Send + Sync` and used as `Arc<dyn DurableStore>`;
///   methods never block a tokio worker thread for long (blocking drivers run on their own
///   threads).
///
/// `smol-durable-testkit`'s `store_conformance_tests!` states each guarantee below as a test
/// (each test names the method it checks); a store is correct when it passes them and
/// `engine_conformance_tests!`.
#[async_trait]
pub trait DurableStore: StoreAdmin {
    /// What this store can do beyond the contract.
    fn capabilities(&self) -> StoreCapabilities;

    /// A human description for error messages: a path or a URL without credentials.
    fn describe(&self) -> String;

    /// Records a process identity, or refreshes the one stored under its id (an upsert).
    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()>;
    /// Reads a process identity (`None` when unknown). A takeover reads it to learn whether the
    /// holder of a lease ran on this host and is gone.
    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>>;

    /// Stores a script source under its content hash. Idempotent: storing the same hash again
    /// changes nothing.
    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()>;
    /// Reads a script source by content hash.
    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>>;

    /// Creates a task and its root run, both `pending`, in one transaction. With an
    /// idempotency key that an existing task of the same scope carries, creates nothing and
    /// returns that task and run with `created: false`. Ids are fresh, so a `Conflict` on them
    /// means this very call already committed (the retry layer relies on it).
    async fn create_run(&self, run: NewRun) -> StoreResult<CreatedRun>;
    /// Inserts a child run (`running`) if no run has its id; an existing unfinished one with
    /// that id is marked `running` again (its parent step was reclaimed and continues it). A
    /// finished one is returned unchanged. Returns the stored row.
    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord>;
    /// Sets a child run's terminal state and its result or reason.
    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()>;
    /// Reads a run.
    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>>;
    /// Reads a task.
    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>>;

    /// Opens attempt `max + 1` of a task for `owner_id`, in one transaction that first asks
    /// [`decide::admit_attempt`](crate::decide::admit_attempt) whether it may: a live lease of
    /// another owner is [`AttemptStart::Busy`] (unless `take_over_from` names that owner); a
    /// completed task, or a failed or cancelled one without `revive`, is
    /// [`AttemptStart::Finished`]; in both cases nothing changes. Otherwise it claims the task
    /// (and the root run) for the owner, closes every `running` attempt of the task with
    /// [`Closure::abandoned_attempt`](crate::decide::Closure::abandoned_attempt), expires the
    /// leases of running steps held by the previous holder or by this owner (their process is
    /// gone, so the next claim reclaims them at once), and with `revive` clears a cancellation
    /// request (a plain claim never does).
    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart>;
    /// Ends an attempt, fenced by the task still being claimed by `finish.owner_id` and the
    /// attempt still `running` (`LeaseLost` otherwise, changing nothing). Writes
    /// [`FinishAttempt::end`] to the attempt, the root run and the task, releases the task's
    /// claim, refreshes the run's cached `budget_spent` from the ledger, and closes the run's
    /// unfinished child runs as `end.unfinished_children` says.
    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()>;
    /// Claims the oldest task of `claim.scope` that is `pending` and due (`not_before` passed)
    /// or `running` under an expired lease, skipping tasks other claimers hold, and opens an
    /// attempt on it as [`start_attempt`](Self::start_attempt) does. A task
    /// [`decide::claim_verdict`](crate::decide::claim_verdict) says must not run (a cancellation
    /// requested while nobody ran it, or its counted attempts used up) is closed with the
    /// verdict's [`Closure`](crate::decide::Closure) — task, running attempts and unfinished
    /// runs — and the next task is tried. Never returns a task of another scope: `local` tasks
    /// are only executed by the owner that created or resumed them. `None` when nothing is
    /// eligible.
    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>>;

    /// All steps of a run, in creation order, in one read.
    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>>;
    /// One step by identity: `(run_id, checkpoint_name)`.
    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>>;
    /// Insert-if-absent on `(run_id, checkpoint_name)`: a new row is `running` with
    /// `fence = 1` and the given lease ([`InsertStep::Inserted`]); an existing row is
    /// returned unchanged ([`InsertStep::Existing`]). Exactly one of any number of concurrent
    /// inserts, on any handles, inserts.
    async fn insert_step(&self, step: NewStep) -> StoreResult<InsertStep>;
    /// Compare-and-set on `(state, fence)` = `(expected_state, expected_fence)`: sets
    /// `running`, `fence + 1`, the new holder and lease. On a mismatch
    /// returns [`StepCas::Conflict`] with the current row and changes nothing.
    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas>;
    /// Compare-and-set on `state = 'running' AND fence = <the caller's>`: stores the result, clears
    /// the lease, and inserts the ledger rows (idempotently on
    /// `(root_run_id, source_type, source_id)`), all in one transaction. On a mismatch nothing
    /// is written — no result, no ledger row — and the current row is returned.
    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas>;
    /// Like [`complete_step`](Self::complete_step), but writes `failed` or `cancelled` with a
    /// reason (the ledger rows bill the tries that failed). A failed step is reclaimable.
    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas>;
    /// Heartbeat, one transaction: extends the task's and the attempt's lease while the task is
    /// still claimed by `renew.owner_id`, and each listed step's lease while that step is still
    /// `running` under the renewer's fence. Reports whether the task is still held, which steps
    /// were not (their fence moved on, or they finished), and whether a cancellation of the run
    /// was requested. A deposed owner extends nothing.
    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome>;

    /// Sum of `output_tokens` over the root run's ledger rows: the budget's spent amount.
    /// Derived from [`ledger_entries`](Self::ledger_entries); a store may answer it with one
    /// aggregate query instead.
    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        let entries = self.ledger_entries(root_run_id).await?;
        Ok(entries
            .iter()
            .fold(0u64, |sum, entry| sum.saturating_add(entry.output_tokens)))
    }
    /// The root run's ledger rows (children's included), in insertion order.
    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>>;

    /// Appends events in the given order, assigning increasing `seq`; an event whose id is
    /// already stored is skipped, so an append may be repeated safely.
    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<()>;

    /// Records a cancellation request for a root run, in one transaction that asks
    /// [`decide::cancel_request`](crate::decide::cancel_request) what it does: a finished task
    /// is left alone; a task nobody executes (pending, or running under an expired lease) is
    /// closed at once with [`Closure::cancelled`](crate::decide::Closure::cancelled); a running
    /// one gets `cancel_requested_at`, which its owner's next heartbeat or poll sees.
    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest>;

    /// Resolves when runner work may have become available: a runner task submitted, or handed
    /// back by a worker. Idle workers wait on it *and* poll, so a store that cannot notify keeps
    /// this default (it never resolves) and a lost notification only costs latency. Spurious
    /// wake-ups are allowed.
    async fn work_available(&self) {
        std::future::pending::<()>().await;
    }

    /// Resolves when the step may have finished (completed, failed or released): a caller
    /// waiting on a step another worker holds is woken by it instead of its next poll. The
    /// default never resolves (the caller polls every `Limits::wait_poll`); resolving early, or
    /// at once when the step is no longer running, is allowed.
    async fn step_finished(&self, step_id: &str) {
        let _ = step_id;
        std::future::pending::<()>().await;
    }
}

/// Listing and administration: what `status`, `history`, `events` and `delete` use. Nothing a
/// run does while it executes goes through here, except reading its own attempts.
#[async_trait]
pub trait StoreAdmin: Send + Sync + std::fmt::Debug {
    /// Runs matching the filter, newest first (creation time, then id).
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// The attempts of a task, in attempt order.
    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>>;
    /// Events of a run and of its children with `seq > after_seq`, in append order (increasing
    /// `seq`), at most `limit`.
    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Deletes a finished task with everything under it, in one transaction: its runs (the
    /// root and every child), attempts, steps, ledger rows and events. `Ok(false)` when there
    /// is no such task; [`unfinished_task`]'s `Conflict`, deleting nothing, while the task or
    /// any of its runs is not terminal. Scripts stay: they are shared by content hash.
    async fn delete_task(&self, task_id: &str) -> StoreResult<bool>;
}
