//! [`MemoryStore`]: the reference store. One mutex guards all state, so every operation is
//! trivially atomic; it is what the core's own tests and the conformance suite's reference run
//! use, and what other stores are compared against. (Long, but one thing: the whole contract
//! implemented on plain maps, read top to bottom beside the trait.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::*;
use crate::decide::{
    admit_attempt, cancel_request, claim_verdict, claimable, counts_against_max_attempts,
    due_for_signals, takes_signals, ClaimVerdict, Closure,
};
use crate::{StoreError, StoreErrorKind};

/// A thread-safe in-memory [`DurableStore`]. Nothing survives the process.
///
/// ```
/// use std::sync::Arc;
/// use smol_durable_core::{DurableStore, MemoryStore};
/// let store: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
/// assert_eq!(store.describe(), "memory");
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    owners: HashMap<String, OwnerRecord>,
    scripts: HashMap<String, String>,
    tasks: BTreeMap<String, TaskRecord>,
    runs: BTreeMap<String, RunRecord>,
    attempts: Vec<AttemptRecord>,
    steps: HashMap<String, StepRecord>,
    step_ids: HashMap<(String, String), String>,
    ledger: Vec<LedgerEntry>,
    ledger_keys: std::collections::HashSet<(String, LedgerSource, String)>,
    spent: HashMap<String, u64>,
    /// Payloads kept as JSON text, as the databases keep them: writing a document out is
    /// cheaper than a deep copy of it, and events are written far more often than read.
    events: Vec<StoredEvent>,
    // Like the databases: event ids are unique, and `seq` never repeats, even after deletes.
    event_ids: std::collections::HashSet<String>,
    last_event_seq: i64,
    signals: Vec<SignalRecord>,
    last_signal_seq: i64,
}

/// An event as the databases keep it: its row with the payload as JSON text, and its `seq`.
#[derive(Debug)]
struct StoredEvent {
    seq: i64,
    row: EventRow,
}

impl StoredEvent {
    fn record(&self) -> StoreResult<EventRecord> {
        let row = &self.row;
        let payload = serde_json::from_str(&row.payload).map_err(|error| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                "read_events",
                format!("event {}: {error}", row.event_id),
            )
        })?;
        Ok(EventRecord {
            event_id: row.event_id.clone(),
            seq: self.seq,
            run_id: row.run_id.clone(),
            root_run_id: row.root_run_id.clone(),
            attempt_id: row.attempt_id.clone(),
            step_id: row.step_id.clone(),
            event_type: row.event_type.to_owned(),
            payload,
            created_at: row.created_at,
        })
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Tables>> {
        self.state.lock().map_err(|_| {
            StoreError::new(
                StoreErrorKind::Other,
                "lock",
                "memory store mutex poisoned by a panic",
            )
        })
    }
}

fn not_found(operation: &'static str, what: &str, id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        operation,
        format!("{what} {id} not found"),
    )
}

impl Tables {
    fn task_mut(&mut self, operation: &'static str, task_id: &str) -> StoreResult<&mut TaskRecord> {
        self.tasks
            .get_mut(task_id)
            .ok_or_else(|| not_found(operation, "task", task_id))
    }

    fn run_mut(&mut self, operation: &'static str, run_id: &str) -> StoreResult<&mut RunRecord> {
        self.runs
            .get_mut(run_id)
            .ok_or_else(|| not_found(operation, "run", run_id))
    }

    fn step_mut(&mut self, operation: &'static str, step_id: &str) -> StoreResult<&mut StepRecord> {
        self.steps
            .get_mut(step_id)
            .ok_or_else(|| not_found(operation, "step", step_id))
    }

    /// The `wait` steps that have not completed, with their runs, of the runs of `task_id` and
    /// `run_id` (any, for `None`).
    fn open_waits<'a>(
        &'a self,
        task_id: Option<&'a str>,
        run_id: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a StepRecord, &'a RunRecord)> + 'a {
        self.steps
            .values()
            .filter(|step| step.kind == StepKind::Wait && step.state != State::Completed)
            .filter(move |step| run_id.is_none_or(|run_id| step.run_id == run_id))
            .filter_map(|step| Some((step, self.runs.get(&step.run_id)?)))
            .filter(move |(_, run)| task_id.is_none_or(|task_id| run.task_id == task_id))
    }

    /// The open `wait` steps of the runs of `task_id` (of `run_id` only, when given).
    fn open_wait_steps(&self, task_id: &str, run_id: Option<&str>) -> Vec<StepRecord> {
        self.open_waits(Some(task_id), run_id)
            .map(|(step, _)| step.clone())
            .collect()
    }

    /// The pending signals of the runs of `task_id`.
    fn pending_signals_of_task(&self, task_id: &str) -> Vec<SignalRecord> {
        self.signals
            .iter()
            .filter(|signal| signal.state == SignalState::Pending)
            .filter(|signal| {
                self.runs
                    .get(&signal.run_id)
                    .is_some_and(|run| run.task_id == task_id)
            })
            .cloned()
            .collect()
    }

    /// Claims a task for `start.owner_id` and opens attempt max+1 (shared by start and
    /// claim-next). A resume (`revive`) clears an earlier cancellation request; a plain claim
    /// never does, so a request cannot be lost to whoever claims the task next.
    fn open_attempt(&mut self, start: &StartAttempt) -> StoreResult<AttemptRecord> {
        let (task_id, run_id, attempt_id) = (&start.task_id, &start.run_id, &start.attempt_id);
        let (owner_id, lease_expires_at, now) =
            (start.owner_id.as_str(), start.lease_expires_at, start.now);
        let previous_holder = self
            .task_mut("start_attempt", task_id)?
            .claimed_by_owner_id
            .clone();
        let abandoned = Closure::abandoned_attempt();
        for attempt in self.attempts.iter_mut() {
            if &attempt.task_id == task_id && attempt.state == State::Running {
                attempt.state = abandoned.state.clone();
                attempt.completed_at = Some(now);
                attempt.failure_reason = Some(abandoned.reason.clone());
            }
        }
        // Steps held by the previous holder (or an earlier attempt of this owner) can be
        // reclaimed at once: their holder is gone.
        for step in self.steps.values_mut() {
            let held_by_gone_owner = step.worker_id.as_deref() == Some(owner_id)
                || (previous_holder.is_some() && step.worker_id == previous_holder);
            if &step.root_run_id == run_id && step.state == State::Running && held_by_gone_owner {
                step.lease_expires_at = Some(now);
            }
        }
        let task = self.task_mut("start_attempt", task_id)?;
        task.state = State::Running;
        task.claimed_by_owner_id = Some(owner_id.to_owned());
        task.lease_expires_at = Some(lease_expires_at);
        task.not_before = None;
        task.updated_at = now;
        if task.claim_scope == ClaimScope::Local {
            task.submitted_by_owner_id = Some(owner_id.to_owned());
        }
        let run = self.run_mut("start_attempt", run_id)?;
        run.state = State::Running;
        if start.revive {
            run.cancel_requested_at = None;
        }
        run.failure_reason = None;
        run.updated_at = now;
        let number = self
            .attempts
            .iter()
            .filter(|attempt| &attempt.task_id == task_id)
            .map(|attempt| attempt.attempt)
            .max()
            .unwrap_or(0)
            + 1;
        let attempt = AttemptRecord {
            attempt_id: attempt_id.clone(),
            run_id: run_id.clone(),
            task_id: task_id.clone(),
            attempt: number,
            worker_id: owner_id.to_owned(),
            state: State::Running,
            lease_expires_at: Some(lease_expires_at),
            started_at: now,
            completed_at: None,
            failure_reason: None,
        };
        self.attempts.push(attempt.clone());
        Ok(attempt)
    }

    /// Ends a task nobody will finish (cancelled while unattended, out of attempts): task, root
    /// run, running attempts and unfinished child runs take `state`.
    fn close_task(&mut self, task_id: &str, closure: Closure, now: i64) -> StoreResult<()> {
        let Closure { state, reason } = closure;
        let task = self.task_mut("close_task", task_id)?;
        task.state = state.clone();
        task.failure_reason = Some(reason.clone());
        task.claimed_by_owner_id = None;
        task.lease_expires_at = None;
        task.updated_at = now;
        for attempt in self.attempts.iter_mut() {
            if attempt.task_id == task_id && attempt.state == State::Running {
                attempt.state = state.clone();
                attempt.completed_at = Some(now);
                attempt.failure_reason = Some(reason.clone());
                attempt.lease_expires_at = None;
            }
        }
        for run in self.runs.values_mut() {
            if run.task_id == task_id && !run.state.is_terminal() {
                run.state = state.clone();
                run.failure_reason = Some(reason.clone());
                run.updated_at = now;
            }
        }
        Ok(())
    }

    /// The step of a run under a checkpoint name.
    fn step_named(&self, run_id: &str, checkpoint_name: &str) -> Option<&StepRecord> {
        self.step_ids
            .get(&(run_id.to_owned(), checkpoint_name.to_owned()))
            .and_then(|step_id| self.steps.get(step_id))
    }

    /// Stores a new step row, findable by id and by name.
    fn add_step(&mut self, step: StepRecord) {
        let key = (step.run_id.clone(), step.checkpoint_name.clone());
        self.step_ids.insert(key, step.step_id.clone());
        self.steps.insert(step.step_id.clone(), step);
    }

    fn insert_ledger(&mut self, entries: Vec<LedgerEntry>) {
        for entry in entries {
            let key = (
                entry.root_run_id.clone(),
                entry.source_type.clone(),
                entry.source_id.clone(),
            );
            if self.ledger_keys.insert(key) {
                if entry.source_type.is_spent() {
                    *self.spent.entry(entry.root_run_id.clone()).or_insert(0) +=
                        entry.output_tokens;
                }
                self.ledger.push(entry);
            }
        }
    }

    fn spent(&self, root_run_id: &str) -> u64 {
        self.spent.get(root_run_id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl DurableStore for MemoryStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::none()
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()> {
        self.lock()?.owners.insert(owner.owner_id.clone(), owner);
        Ok(())
    }

    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>> {
        Ok(self.lock()?.owners.get(owner_id).cloned())
    }

    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()> {
        self.lock()?
            .scripts
            .entry(hash.to_owned())
            .or_insert_with(|| source.to_owned());
        Ok(())
    }

    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>> {
        Ok(self.lock()?.scripts.get(hash).cloned())
    }

    async fn create_run(&self, new: NewRun) -> StoreResult<CreatedRun> {
        let mut tables = self.lock()?;
        if let Some(key) = &new.idempotency_key {
            let existing = tables.tasks.values().find(|task| {
                task.idempotency_key.as_deref() == Some(key) && task.claim_scope == new.claim_scope
            });
            if let Some(task) = existing.cloned() {
                let run = tables
                    .runs
                    .values()
                    .find(|run| run.task_id == task.task_id && run.is_root())
                    .cloned()
                    .ok_or_else(|| not_found("create_run", "root run of task", &task.task_id))?;
                return Ok(CreatedRun {
                    task,
                    run,
                    created: false,
                });
            }
        }
        if tables.tasks.contains_key(&new.task_id) || tables.runs.contains_key(&new.run_id) {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                "create_run",
                format!("task {} or run {} already exists", new.task_id, new.run_id),
            ));
        }
        // What the SQL stores' keys refuse: a step of another run, a step id or name taken.
        let (mut ids, mut names) = (HashSet::new(), HashSet::new());
        for step in &new.steps {
            let taken = step.run_id != new.run_id
                || step.root_run_id != new.run_id
                || tables.steps.contains_key(&step.step_id)
                || !ids.insert(&step.step_id)
                || !names.insert(&step.checkpoint_name);
            if taken {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    "create_run",
                    format!(
                        "step {} ({}) cannot be stored with run {}",
                        step.step_id, step.checkpoint_name, new.run_id
                    ),
                ));
            }
        }
        let task = TaskRecord {
            task_id: new.task_id.clone(),
            task_name: "workflow.run".to_owned(),
            state: State::Pending,
            claim_scope: new.claim_scope,
            params: new.params,
            submitted_by_owner_id: Some(new.owner_id),
            claimed_by_owner_id: None,
            lease_expires_at: None,
            max_attempts: new.max_attempts,
            idempotency_key: new.idempotency_key,
            not_before: None,
            completed_payload: None,
            failure_reason: None,
            created_at: new.now,
            updated_at: new.now,
        };
        let run = RunRecord {
            run_id: new.run_id.clone(),
            task_id: new.task_id.clone(),
            root_run_id: new.run_id.clone(),
            parent_run_id: None,
            parent_step_id: None,
            state: State::Pending,
            workflow: new.workflow,
            args: new.args,
            budget_total: new.budget_total,
            budget_spent: 0,
            completed_payload: None,
            failure_reason: None,
            cancel_requested_at: None,
            created_at: new.now,
            updated_at: new.now,
        };
        tables.tasks.insert(task.task_id.clone(), task.clone());
        tables.runs.insert(run.run_id.clone(), run.clone());
        for step in new.steps {
            tables.add_step(step);
        }
        tables.insert_ledger(new.ledger);
        Ok(CreatedRun {
            task,
            run,
            created: true,
        })
    }

    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord> {
        let mut tables = self.lock()?;
        if let Some(existing) = tables.runs.get_mut(&child.run_id) {
            if existing.state != State::Completed {
                existing.state = State::Running;
                existing.failure_reason = None;
                existing.updated_at = child.now;
            }
            return Ok(existing.clone());
        }
        let run = RunRecord {
            run_id: child.run_id.clone(),
            task_id: child.task_id,
            root_run_id: child.root_run_id,
            parent_run_id: Some(child.parent_run_id),
            parent_step_id: Some(child.parent_step_id),
            state: State::Running,
            workflow: child.workflow,
            args: child.args,
            budget_total: None,
            budget_spent: 0,
            completed_payload: None,
            failure_reason: None,
            cancel_requested_at: None,
            created_at: child.now,
            updated_at: child.now,
        };
        tables.runs.insert(run.run_id.clone(), run.clone());
        Ok(run)
    }

    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()> {
        let mut tables = self.lock()?;
        let run = tables.run_mut("finish_child_run", run_id)?;
        if run.state == State::Completed {
            return Ok(());
        }
        match outcome {
            RunOutcome::Completed(value) => {
                run.state = State::Completed;
                run.completed_payload = Some(value);
            }
            RunOutcome::Failed(reason) => {
                run.state = State::Failed;
                run.failure_reason = Some(reason);
            }
            RunOutcome::Cancelled(reason) => {
                run.state = State::Cancelled;
                run.failure_reason = Some(reason);
            }
        }
        run.updated_at = now;
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        Ok(self.lock()?.runs.get(run_id).cloned())
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self.lock()?.tasks.get(task_id).cloned())
    }

    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart> {
        let mut tables = self.lock()?;
        let task = tables.task_mut("start_attempt", &start.task_id)?;
        let refused = admit_attempt(
            task,
            &start.owner_id,
            start.take_over_from.as_deref(),
            start.revive,
            start.now,
        );
        if let Some(refused) = refused {
            return Ok(refused);
        }
        let attempt = tables.open_attempt(&start)?;
        Ok(AttemptStart::Started(attempt))
    }

    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()> {
        let mut tables = self.lock()?;
        let task = tables.task_mut("finish_attempt", &finish.task_id)?;
        if task.claimed_by_owner_id.as_deref() != Some(finish.owner_id.as_str()) {
            return Err(StoreError::new(
                StoreErrorKind::LeaseLost,
                "finish_attempt",
                format!(
                    "task {} is no longer claimed by {}",
                    finish.task_id, finish.owner_id
                ),
            ));
        }
        let attempt = tables
            .attempts
            .iter_mut()
            .find(|attempt| attempt.attempt_id == finish.attempt_id)
            .ok_or_else(|| not_found("finish_attempt", "attempt", &finish.attempt_id))?;
        if attempt.state != State::Running {
            return Err(StoreError::new(
                StoreErrorKind::LeaseLost,
                "finish_attempt",
                format!("attempt {} is already {}", finish.attempt_id, attempt.state),
            ));
        }
        let end = finish.end;
        attempt.state = end.attempt;
        attempt.completed_at = Some(finish.now);
        attempt.failure_reason = end.reason.clone();
        attempt.lease_expires_at = None;
        let spent = tables.spent(&finish.run_id);
        let run = tables.run_mut("finish_attempt", &finish.run_id)?;
        run.state = end.run_and_task.clone();
        run.completed_payload = end.payload.clone();
        run.failure_reason = end.reason.clone();
        run.budget_spent = spent;
        run.updated_at = finish.now;
        let task = tables.task_mut("finish_attempt", &finish.task_id)?;
        task.state = end.run_and_task;
        task.completed_payload = end.payload;
        task.failure_reason = end.reason;
        if let Some(scope) = end.claim_scope {
            task.claim_scope = scope;
        }
        task.lease_expires_at = None;
        task.not_before = end.not_before;
        task.claimed_by_owner_id = None;
        task.updated_at = finish.now;
        for run in tables.runs.values_mut() {
            let child = run.root_run_id == finish.run_id && !run.is_root();
            if child && !run.state.is_terminal() {
                run.state = end.unfinished_children.state.clone();
                run.failure_reason = Some(end.unfinished_children.reason.clone());
                run.updated_at = finish.now;
            }
        }
        // A signal that arrived while the attempt was ending found the task still running.
        let waits = tables.open_wait_steps(&finish.task_id, None);
        let signals = tables.pending_signals_of_task(&finish.task_id);
        let task = tables.task_mut("finish_attempt", &finish.task_id)?;
        if let Some(at) =
            due_for_signals(&task.state, task.not_before, finish.now, &waits, &signals)
        {
            task.not_before = Some(at);
        }
        Ok(())
    }

    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>> {
        let mut tables = self.lock()?;
        loop {
            let eligible = tables
                .tasks
                .values()
                .filter(|task| task.claim_scope == claim.scope)
                .filter(|task| claimable(task, claim.now))
                .min_by(|a, b| {
                    a.created_at
                        .cmp(&b.created_at)
                        .then_with(|| a.task_id.cmp(&b.task_id))
                })
                .cloned();
            let Some(task) = eligible else {
                return Ok(None);
            };
            let run = tables
                .runs
                .values()
                .find(|run| run.task_id == task.task_id && run.is_root())
                .cloned()
                .ok_or_else(|| not_found("claim_next_task", "root run of task", &task.task_id))?;
            let attempts = tables
                .attempts
                .iter()
                .filter(|attempt| attempt.task_id == task.task_id)
                .filter(|attempt| counts_against_max_attempts(&attempt.state))
                .count();
            let counted = u32::try_from(attempts).unwrap_or(u32::MAX);
            let verdict = claim_verdict(
                run.cancel_requested_at.is_some(),
                counted,
                task.max_attempts,
            );
            if let ClaimVerdict::Close(closure) = verdict {
                tables.close_task(&task.task_id, closure, claim.now)?;
                continue;
            }
            let attempt = tables.open_attempt(&StartAttempt {
                attempt_id: claim.attempt_id.clone(),
                task_id: task.task_id.clone(),
                run_id: run.run_id.clone(),
                owner_id: claim.owner_id.clone(),
                lease_expires_at: claim.lease_expires_at,
                take_over_from: None,
                revive: false,
                now: claim.now,
            })?;
            let task = tables.task_mut("claim_next_task", &task.task_id)?.clone();
            let run = tables.run_mut("claim_next_task", &run.run_id)?.clone();
            return Ok(Some(ClaimedTask {
                task,
                run,
                attempt,
                failed_attempts: counted,
            }));
        }
    }

    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>> {
        let tables = self.lock()?;
        let mut steps: Vec<StepRecord> = tables
            .steps
            .values()
            .filter(|step| step.run_id == run_id)
            .cloned()
            .collect();
        steps.sort_by(StepRecord::reached_order);
        Ok(steps)
    }

    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>> {
        let tables = self.lock()?;
        Ok(tables.step_named(run_id, checkpoint_name).cloned())
    }

    async fn insert_step(&self, new: NewStep) -> StoreResult<InsertStep> {
        let mut tables = self.lock()?;
        if let Some(existing) = tables.step_named(&new.run_id, &new.checkpoint_name) {
            return Ok(InsertStep::Existing(existing.clone()));
        }
        let step = new.into_claimed_row();
        tables.add_step(step.clone());
        Ok(InsertStep::Inserted(step))
    }

    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        let mut tables = self.lock()?;
        if let Some(existing) = tables.step_named(&record.step.run_id, &record.step.checkpoint_name)
        {
            return Ok(StepCas::Conflict(Some(existing.clone())));
        }
        let attempt_running = tables.attempts.iter().any(|attempt| {
            attempt.attempt_id == record.attempt_id && attempt.state == State::Running
        });
        if !attempt_running {
            return Ok(StepCas::Conflict(None));
        }
        let step = record
            .step
            .clone()
            .into_completed_row(record.result.clone(), record.now);
        tables.add_step(step.clone());
        tables.insert_ledger(record.ledger.clone());
        Ok(StepCas::Applied(step))
    }

    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas> {
        let mut tables = self.lock()?;
        let step = tables.step_mut("claim_step", &claim.step_id)?;
        if step.state != claim.expected_state || step.fence != claim.expected_fence {
            return Ok(StepCas::Conflict(Some(step.clone())));
        }
        step.state = State::Running;
        step.fence += 1;
        step.worker_id = Some(claim.worker_id);
        step.lease_expires_at = Some(claim.lease_expires_at);
        step.last_attempt_at = Some(claim.now);
        step.failure_reason = None;
        step.updated_at = claim.now;
        Ok(StepCas::Applied(step.clone()))
    }

    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas> {
        let mut tables = self.lock()?;
        let step = tables.step_mut("complete_step", &complete.step_id)?;
        let fenced = complete.fence == step.fence;
        if step.state != State::Running || !fenced {
            return Ok(StepCas::Conflict(Some(step.clone())));
        }
        step.state = State::Completed;
        step.result = Some(complete.result);
        step.lease_expires_at = None;
        step.updated_at = complete.now;
        let applied = step.clone();
        tables.insert_ledger(complete.ledger);
        Ok(StepCas::Applied(applied))
    }

    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas> {
        let mut tables = self.lock()?;
        let step = tables.step_mut("fail_step", &fail.step_id)?;
        if step.state != State::Running || step.fence != fail.fence {
            return Ok(StepCas::Conflict(Some(step.clone())));
        }
        step.state = fail.state;
        step.failure_reason = Some(fail.reason);
        step.lease_expires_at = None;
        step.updated_at = fail.now;
        let applied = step.clone();
        tables.insert_ledger(fail.ledger);
        Ok(StepCas::Applied(applied))
    }

    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome> {
        let mut tables = self.lock()?;
        if let Some(owner) = tables.owners.get_mut(&renew.owner_id) {
            owner.heartbeat_at = renew.now;
        }
        let task = tables.task_mut("renew_leases", &renew.task_id)?;
        let task_held = task.state == State::Running
            && task.claimed_by_owner_id.as_deref() == Some(renew.owner_id.as_str());
        if task_held {
            task.lease_expires_at = Some(renew.lease_expires_at);
            if let Some(attempt) = tables
                .attempts
                .iter_mut()
                .find(|attempt| attempt.attempt_id == renew.attempt_id)
            {
                attempt.lease_expires_at = Some(renew.lease_expires_at);
            }
        }
        let mut lost_steps = Vec::new();
        for lease in renew.steps {
            match tables.steps.get_mut(&lease.step_id) {
                // A deposed owner renews nothing: its successor expired those leases on purpose.
                Some(step)
                    if task_held && step.state == State::Running && step.fence == lease.fence =>
                {
                    step.lease_expires_at = Some(lease.lease_expires_at);
                }
                _ => lost_steps.push(lease.step_id),
            }
        }
        let cancel_requested = tables
            .runs
            .get(&renew.run_id)
            .is_some_and(|run| run.cancel_requested_at.is_some());
        Ok(RenewOutcome {
            task_held,
            lost_steps,
            cancel_requested,
        })
    }

    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        Ok(self.lock()?.spent(root_run_id))
    }

    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        Ok(self
            .lock()?
            .ledger
            .iter()
            .filter(|entry| entry.root_run_id == root_run_id)
            .cloned()
            .collect())
    }

    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()> {
        // Refused whole, as the databases' JSON checks refuse the batch's transaction.
        for event in events {
            if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&event.payload) {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    "append_events",
                    format!(
                        "event {}: its document is not JSON: {error}",
                        event.event_id
                    ),
                ));
            }
        }
        let mut tables = self.lock()?;
        for event in events {
            // Appending is idempotent by event id (a retried append whose answer was lost).
            if !tables.event_ids.insert(event.event_id.clone()) {
                continue;
            }
            tables.last_event_seq += 1;
            let seq = tables.last_event_seq;
            tables.events.push(StoredEvent {
                seq,
                row: event.clone(),
            });
        }
        Ok(())
    }

    async fn send_signal(&self, new: NewSignal) -> StoreResult<SignalSend> {
        let mut tables = self.lock()?;
        let Some(run) = tables.runs.get(&new.run_id) else {
            return Ok(SignalSend::RunNotFound);
        };
        let (root_run_id, task_id) = (run.root_run_id.clone(), run.task_id.clone());
        let task_state = tables
            .tasks
            .get(&task_id)
            .map_or(State::Pending, |task| task.state.clone());
        // A repeated send answers as the first did, even after the run finished.
        if let Some(key) = &new.idempotency_key {
            let earlier = tables.signals.iter().find(|signal| {
                signal.run_id == new.run_id && signal.idempotency_key.as_ref() == Some(key)
            });
            if let Some(earlier) = earlier {
                return Ok(SignalSend::Duplicate(earlier.clone()));
            }
        }
        for state in [&run.state, &task_state] {
            if !takes_signals(state) {
                return Ok(SignalSend::RunFinished(state.clone()));
            }
        }
        if tables
            .signals
            .iter()
            .any(|signal| signal.signal_id == new.signal_id)
        {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                "send_signal",
                format!("signal {} already exists", new.signal_id),
            ));
        }
        tables.last_signal_seq += 1;
        let signal = SignalRecord {
            signal_id: new.signal_id,
            run_id: new.run_id,
            root_run_id,
            name: new.name,
            payload: new.payload,
            idempotency_key: new.idempotency_key,
            state: SignalState::Pending,
            step_id: None,
            reason: None,
            seq: tables.last_signal_seq,
            created_at: new.now,
            updated_at: new.now,
        };
        tables.signals.push(signal.clone());
        let waits = tables.open_wait_steps(&task_id, Some(&signal.run_id));
        if let Some(task) = tables.tasks.get_mut(&task_id) {
            let due = due_for_signals(
                &task.state,
                task.not_before,
                new.now,
                &waits,
                std::slice::from_ref(&signal),
            );
            if let Some(at) = due {
                task.not_before = Some(at);
                task.updated_at = new.now;
            }
        }
        Ok(SignalSend::Stored(signal))
    }

    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>> {
        let tables = self.lock()?;
        Ok(tables
            .signals
            .iter()
            .filter(|signal| signal.run_id == run_id && signal.state == SignalState::Pending)
            .filter(|signal| names.contains(&signal.name))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume> {
        let mut tables = self.lock()?;
        let Some(index) = tables
            .signals
            .iter()
            .position(|signal| signal.signal_id == consume.signal_id)
        else {
            return Ok(SignalConsume::SignalTaken(None));
        };
        if tables.signals[index].state != SignalState::Pending {
            return Ok(SignalConsume::SignalTaken(Some(
                tables.signals[index].clone(),
            )));
        }
        let Some(step) = tables.steps.get_mut(&consume.step_id) else {
            return Ok(SignalConsume::StepConflict(None));
        };
        if step.state != State::Running || step.fence != consume.fence {
            return Ok(SignalConsume::StepConflict(Some(step.clone())));
        }
        step.state = State::Completed;
        step.result = Some(consume.result);
        step.lease_expires_at = None;
        step.updated_at = consume.now;
        let completed = step.clone();
        let signal = &mut tables.signals[index];
        signal.state = SignalState::Consumed;
        signal.step_id = Some(consume.step_id);
        signal.updated_at = consume.now;
        Ok(SignalConsume::Consumed(completed))
    }

    async fn reject_signal(&self, signal_id: &str, reason: Value, now: i64) -> StoreResult<bool> {
        let mut tables = self.lock()?;
        let signal = tables
            .signals
            .iter_mut()
            .find(|signal| signal.signal_id == signal_id && signal.state == SignalState::Pending);
        Ok(match signal {
            Some(signal) => {
                signal.state = SignalState::Rejected;
                signal.reason = Some(reason);
                signal.updated_at = now;
                true
            }
            None => false,
        })
    }

    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest> {
        let mut tables = self.lock()?;
        let Some(run) = tables.runs.get(run_id) else {
            return Ok(CancelRequest::NotFound);
        };
        let root_run_id = run.root_run_id.clone();
        let task_id = run.task_id.clone();
        let task = tables.task_mut("request_cancel", &task_id)?.clone();
        let outcome = cancel_request(&task, now);
        if let CancelRequest::AlreadyFinished(_) = outcome {
            return Ok(outcome);
        }
        let root = tables.run_mut("request_cancel", &root_run_id)?;
        root.cancel_requested_at = Some(now);
        root.updated_at = now;
        if outcome == CancelRequest::CancelledPending {
            tables.close_task(&task_id, Closure::cancelled(), now)?;
        }
        Ok(outcome)
    }
}

#[async_trait]
impl StoreAdmin for MemoryStore {
    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>> {
        let tables = self.lock()?;
        Ok(tables
            .signals
            .iter()
            .filter(|signal| signal.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>> {
        let tables = self.lock()?;
        let mut waits: Vec<StepRecord> = tables
            .open_waits(filter.task_id.as_deref(), filter.run_id.as_deref())
            .filter(|(_, run)| !run.state.is_terminal())
            .map(|(step, _)| step.clone())
            .collect();
        waits.sort_by(StepRecord::reached_order);
        if let Some(limit) = filter.limit {
            waits.truncate(limit);
        }
        Ok(waits)
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let tables = self.lock()?;
        let mut runs: Vec<RunRecord> = tables
            .runs
            .values()
            .filter(|run| !filter.roots_only || run.is_root())
            .filter(|run| filter.states.is_empty() || filter.states.contains(&run.state))
            .filter(|run| {
                filter
                    .task_id
                    .as_ref()
                    .is_none_or(|task| &run.task_id == task)
            })
            .filter(|run| match &filter.name_contains {
                None => true,
                Some(text) => run.workflow.name().is_some_and(|name| {
                    name.to_ascii_lowercase()
                        .contains(&text.to_ascii_lowercase())
                }),
            })
            .filter(|run| {
                filter
                    .created_from
                    .is_none_or(|from| run.created_at >= from)
            })
            .filter(|run| {
                filter
                    .created_until
                    .is_none_or(|until| run.created_at <= until)
            })
            .cloned()
            .collect();
        runs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.run_id.cmp(&a.run_id))
        });
        if let Some(limit) = filter.limit {
            runs.truncate(limit);
        }
        Ok(runs)
    }

    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let tables = self.lock()?;
        let mut attempts: Vec<AttemptRecord> = tables
            .attempts
            .iter()
            .filter(|attempt| attempt.task_id == task_id)
            .cloned()
            .collect();
        attempts.sort_by_key(|attempt| attempt.attempt);
        Ok(attempts)
    }

    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let tables = self.lock()?;
        tables
            .events
            .iter()
            .filter(|event| event.seq > after_seq)
            .filter(|event| event.row.run_id == run_id || event.row.root_run_id == run_id)
            .take(limit)
            .map(StoredEvent::record)
            .collect()
    }

    async fn delete_task(&self, task_id: &str) -> StoreResult<bool> {
        let mut tables = self.lock()?;
        let Some(task) = tables.tasks.get(task_id) else {
            return Ok(false);
        };
        let unfinished = std::iter::once(&task.state)
            .chain(
                tables
                    .runs
                    .values()
                    .filter(|run| run.task_id == task_id)
                    .map(|run| &run.state),
            )
            .find(|state| !state.is_terminal());
        if let Some(state) = unfinished {
            return Err(super::unfinished_task(task_id, state));
        }
        let runs: std::collections::HashSet<String> = tables
            .runs
            .values()
            .filter(|run| run.task_id == task_id)
            .map(|run| run.run_id.clone())
            .collect();
        tables.tasks.remove(task_id);
        tables.runs.retain(|id, _| !runs.contains(id));
        tables.attempts.retain(|attempt| attempt.task_id != task_id);
        tables.steps.retain(|_, step| !runs.contains(&step.run_id));
        tables
            .step_ids
            .retain(|(run_id, _), _| !runs.contains(run_id));
        tables.ledger.retain(|entry| !runs.contains(&entry.run_id));
        tables
            .ledger_keys
            .retain(|(root, _, _)| !runs.contains(root));
        tables.spent.retain(|root, _| !runs.contains(root));
        tables
            .signals
            .retain(|signal| !runs.contains(&signal.run_id));
        let Tables {
            events, event_ids, ..
        } = &mut *tables;
        events.retain(|event| {
            let keep = !runs.contains(&event.row.run_id);
            if !keep {
                event_ids.remove(&event.row.event_id);
            }
            keep
        });
        Ok(true)
    }
}
