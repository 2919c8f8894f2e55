//! The storage contract: small atomic operations, no decisions.
//!
//! A [`DurableStore`] never decides whether a step replays, runs, waits or is reclaimed; the
//! core does that in [`decide`](crate::decide) and then asks the store for one of the operations
//! below. Each operation must be atomic on its own (one transaction, or one lock), and every
//! compare-and-set must compare exactly what its request names. The conformance suite in
//! `smol-durable-testkit` states these guarantees as tests; a store is correct when it passes.

mod memory;
mod records;
mod requests;
mod retry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use memory::MemoryStore;
pub use records::{
    AttemptRecord, ClaimScope, EventRecord, ForkOrigin, LedgerEntry, LedgerSource, OwnerRecord,
    RunRecord, RunStart, SignalRecord, SignalState, State, StepKind, StepRecord, TaskRecord,
    WorkflowInfo,
};
pub use requests::{
    AttemptOutcome, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, ConsumeSignal, CreatedRun, EventRow, FailStep, FinishAttempt, InsertStep,
    NewChildRun, NewEvent, NewRun, NewSignal, NewStep, RecordStep, RenewLeases, RenewOutcome,
    RunFilter, RunOutcome, SignalConsume, SignalSend, StartAttempt, StepCas, StepLease, WaitFilter,
};
pub use retry::{RetryingStore, StoreRetryPolicy};

use crate::{StoreError, StoreErrorKind};

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a store can do beyond the contract. The conformance suite reads it: with `notify`, a
/// caller waiting on a step held elsewhere must be woken without its poll.
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
///   names (`state`, the fence, the owner) and, when it loses, changes nothing and
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

    /// Creates a task and its root run, both `pending`, in one transaction — with the steps and
    /// ledger rows [`NewRun`] carries (a fork's copies), inserted as given. With an
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
    /// [`FinishAttempt::end`] to the attempt, the root run and the task, clears the task's
    /// claim, refreshes the run's cached `budget_spent` from the ledger, and closes the run's
    /// unfinished child runs as `end.unfinished_children` says. A task handed back for later
    /// (parked, detached) is made due now instead when
    /// [`decide::due_for_signals`](crate::decide::due_for_signals) says a pending signal of one
    /// of the task's runs answers one of their open waits.
    ///
    /// This and [`send_signal`](Self::send_signal) are ordered on the task (one transaction
    /// each, holding the task): whichever commits second sees the other's write, so a signal
    /// stored while a run parks always wakes it.
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
    /// What an attempt reads before it runs the root run `root_run_id`: its steps
    /// ([`load_steps`](Self::load_steps)) and what its tree spent
    /// ([`budget_spent`](Self::budget_spent)). The default reads them one after the other;
    /// a store that can answer both in one round trip (each attempt pays it).
    async fn load_run_start(&self, root_run_id: &str) -> StoreResult<RunStart> {
        Ok(RunStart {
            steps: self.load_steps(root_run_id).await?,
            budget_spent: self.budget_spent(root_run_id).await?,
        })
    }
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
    /// Inserts a step that completed before it was claimed (see [`RecordStep`]): the row
    /// `completed` at `fence = 1` with the ledger rows, in one transaction, when
    /// `(run_id, checkpoint_name)` is free and the attempt `record.attempt_id` is `running`.
    /// [`StepCas::Applied`] with the stored row; otherwise [`StepCas::Conflict`], writing
    /// nothing, with the row under that name or, when there is none (the attempt is no longer
    /// running), `None`.
    ///
    /// The engine records an agent call this way when it ends within
    /// [`Limits::deferred_claim`](crate::Limits::deferred_claim) of starting: one durable
    /// transaction per step instead of a claim and a completion. The attempt is the fence a
    /// claim's `fence` would have been: a deposed attempt (its task taken over) writes nothing.
    /// The default claims and completes in two transactions ([`insert_step`](Self::insert_step),
    /// [`complete_step`](Self::complete_step)) without checking the attempt — still exactly
    /// one stored result, since both writes are fenced — and the built-in stores override it.
    ///
    /// Borrowed, like [`append_events`](Self::append_events): a retry needs no copy, and the
    /// caller keeps the result it hands back to the script.
    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        match self.insert_step(record.step.clone()).await? {
            InsertStep::Existing(row) => Ok(StepCas::Conflict(Some(row))),
            InsertStep::Inserted(row) => {
                self.complete_step(CompleteStep {
                    step_id: row.step_id,
                    fence: row.fence,
                    result: record.result.clone(),
                    ledger: record.ledger.clone(),
                    now: record.now,
                })
                .await
            }
        }
    }
    /// Like [`complete_step`](Self::complete_step), but writes `failed` or `cancelled` with a
    /// reason (the ledger rows bill the tries that failed). A failed step is reclaimable.
    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas>;
    /// Heartbeat, one transaction: extends the task's and the attempt's lease while the task is
    /// still claimed by `renew.owner_id`, and each listed step's lease while that step is still
    /// `running` under the renewer's fence. Reports whether the task is still held, which steps
    /// were not (their fence moved on, or they finished), and whether a cancellation of the run
    /// was requested. A deposed owner extends nothing.
    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome>;

    /// Sum of `output_tokens` over the root run's ledger rows that count as spent
    /// ([`LedgerSource::is_spent`]): the budget's spent amount. The
    /// default derives it from [`ledger_entries`](Self::ledger_entries), reading every row; the
    /// built-in stores answer it with one aggregate instead (it is read at every attempt start).
    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        let entries = self.ledger_entries(root_run_id).await?;
        Ok(entries
            .iter()
            .filter(|entry| entry.source_type.is_spent())
            .fold(0u64, |sum, entry| sum.saturating_add(entry.output_tokens)))
    }
    /// The root run's ledger rows (children's included), in insertion order.
    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>>;

    /// Appends events in the given order, assigning increasing `seq`; an event whose id is
    /// already stored is skipped, so an append may be repeated safely. Borrowed, so a retry
    /// needs no copy of the batch. Rows carry their documents as JSON text, written once by
    /// whoever emitted them (`EventRow::from(&NewEvent)`).
    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()>;

    /// Records a cancellation request for a root run, in one transaction that asks
    /// [`decide::cancel_request`](crate::decide::cancel_request) what it does: a finished task
    /// is left alone; a task nobody executes (pending, or running under an expired lease) is
    /// closed at once with [`Closure::cancelled`](crate::decide::Closure::cancelled); a running
    /// one gets `cancel_requested_at`, which its owner's next heartbeat or poll sees.
    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest>;

    /// Stores a signal in a run's mailbox, in one transaction: an unknown run is
    /// [`SignalSend::RunNotFound`]; an idempotency key the run's mailbox already holds is
    /// [`SignalSend::Duplicate`] (storing nothing), whatever the run's state; a finished run (the
    /// run, or its task) is [`SignalSend::RunFinished`], storing nothing; otherwise the signal is
    /// stored `pending` with a `seq` above every stored one, and the run's task is made due now
    /// when [`decide::due_for_signals`](crate::decide::due_for_signals) says the signal answers
    /// an open wait of the run (given the run's `wait` steps that have not completed).
    async fn send_signal(&self, signal: NewSignal) -> StoreResult<SignalSend>;
    /// The pending signals of a run with one of `names`, oldest first (by `seq`), at most
    /// `limit`.
    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>>;
    /// Consumes a signal for a wait step: compare-and-set on the signal being `pending` *and*
    /// the step being `running` under the fence, both written in one transaction or neither
    /// (see [`SignalConsume`]). The signal records the step; the step stores the result.
    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume>;
    /// Marks a pending signal `rejected` with a reason (compare-and-set on `pending`).
    /// Returns whether it was.
    async fn reject_signal(&self, signal_id: &str, reason: Value, now: i64) -> StoreResult<bool>;

    /// Resolves when runner work may have become available: a runner task submitted, or handed
    /// back by a worker. Idle workers wait on it *and* poll, so a store that cannot notify keeps
    /// this default (it never resolves) and a lost notification only costs latency. Spurious
    /// wake-ups are allowed.
    async fn work_available(&self) {
        std::future::pending::<()>().await;
    }

    /// Resolves when the step may have finished (completed, failed or no longer held): a caller
    /// waiting on a step another worker holds is woken by it instead of its next poll. The
    /// default never resolves (the caller polls every `Limits::wait_poll`); resolving early, or
    /// at once when the step is no longer running, is allowed.
    async fn step_finished(&self, step_id: &str) {
        let _ = step_id;
        std::future::pending::<()>().await;
    }

    /// Resolves when a signal may have been stored for `run_id`: a waiting run is woken by it
    /// instead of its next poll. The default never resolves (waits poll every
    /// `Limits::wait_poll`); spurious wake-ups are allowed.
    async fn signal_sent(&self, run_id: &str) {
        let _ = run_id;
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
    /// The newest `limit` events of a run and of its children, in append order: what a view
    /// of a long run shows without reading all of them. Provided by paging through
    /// [`read_events`](Self::read_events); stores override it with one read from the end.
    async fn read_newest_events(
        &self,
        run_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let mut kept = std::collections::VecDeque::with_capacity(limit.min(4_096));
        let mut after = 0;
        loop {
            let page = self.read_events(run_id, after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == 1_000;
            kept.extend(page);
            while kept.len() > limit {
                kept.pop_front();
            }
            if !full {
                break;
            }
        }
        Ok(kept.into())
    }
    /// Deletes a finished task with everything under it, in one transaction: its runs (the
    /// root and every child), attempts, steps, ledger rows, signals and events. `Ok(false)` when there
    /// is no such task; [`unfinished_task`]'s `Conflict`, deleting nothing, while the task or
    /// any of its runs is not terminal. Scripts stay: they are shared by content hash.
    async fn delete_task(&self, task_id: &str) -> StoreResult<bool>;
    /// Every signal sent to a run, in mailbox order (`seq`), whatever its state.
    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>>;
    /// The open waits: `wait` steps that have not completed, of runs that have not finished,
    /// matching the filter, oldest first (creation time, then step id).
    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>>;
}
