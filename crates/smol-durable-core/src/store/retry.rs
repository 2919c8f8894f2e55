//! Retries of retryable store errors, in front of every store an engine uses. (Long, but one
//! thing: the wrapper, its policy and the recognition of a retried write that had committed.)
//!
//! A database that drops a connection, restarts, or is briefly locked or overloaded answers
//! with a retryable error ([`StoreErrorKind::Unavailable`]); the engine retries the operation
//! with bounded, doubling backoff ([`StoreRetryPolicy`]) before the error reaches the run.
//! Terminal errors (corrupt rows, conflicts, lost leases) pass through at once.
//!
//! A write whose failed try committed anyway is recognised on its retry and reported as the
//! success it was (the `settle_retried_*` functions below): the retry
//! of an insert finds its own fresh id, a claim its own owner and lease, a completion or failure
//! its own result under its fence, a finish its own attempt ended as asked; an attempt start
//! looks for its own attempt before trying again; appends skip event ids already stored. Two
//! operations are not retried here: a claim of the next task (nothing names it before it is
//! made; the task is claimed again once its lease expires, its lost attempt counting like a
//! crashed worker's) and lease renewal (the heartbeat renews again a third of a lease later).

use std::future::Future;

use async_trait::async_trait;

use super::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, DurableStore, EventRecord, EventRow, FailStep, FinishAttempt,
    InsertStep, LedgerEntry, NewChildRun, NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases,
    RenewOutcome, RunFilter, RunOutcome, RunRecord, RunStart, StartAttempt, State, StepCas,
    StepRecord, StoreAdmin, StoreCapabilities, StoreResult, TaskRecord,
};
use super::{
    ConsumeSignal, NewSignal, SignalConsume, SignalRecord, SignalSend, SignalState, WaitFilter,
};
use crate::StoreErrorKind;
use serde_json::Value;

/// How the engine retries a store operation that failed with a retryable error
/// ([`StoreError::is_retryable`](crate::StoreError::is_retryable): connection lost, database
/// locked or overloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRetryPolicy {
    /// Tries after the first one before the error is surfaced (default 8).
    pub max_retries: u32,
    /// Wait before the first retry; each further wait doubles (default 10 ms).
    pub first_backoff: std::time::Duration,
    /// Longest single wait (default 1 s).
    pub max_backoff: std::time::Duration,
    /// No retry starts once this long has passed since the first try (default 10 s): each try
    /// may itself wait (a busy SQLite file, a pool with no free connection), and an operation
    /// must give up well inside a lease (default 60 s).
    pub max_elapsed: std::time::Duration,
}

impl Default for StoreRetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            first_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_secs(1),
            max_elapsed: std::time::Duration::from_secs(10),
        }
    }
}

impl StoreRetryPolicy {
    /// No retries: every store error reaches the caller at once.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// How long to wait before retrying an operation that has failed `failures` times (counting the
/// failure just seen) with a retryable error, `elapsed` after its first try began; `None` when
/// the policy's retries or time are used up.
fn store_retry_delay(
    policy: &StoreRetryPolicy,
    failures: u32,
    elapsed: std::time::Duration,
) -> Option<std::time::Duration> {
    if failures == 0 || failures > policy.max_retries {
        return None;
    }
    let doublings = (failures - 1).min(31);
    let delay = policy
        .first_backoff
        .saturating_mul(1u32 << doublings)
        .min(policy.max_backoff);
    (elapsed.saturating_add(delay) < policy.max_elapsed).then_some(delay)
}

// A write whose first try failed with a retryable error may have committed anyway (the
// connection dropped after the commit, a timeout fired late). Its retry then finds its own
// write and reports it as someone else's; the functions below recognise that case from what only
// the first try could have written (a fresh id, our owner with our exact lease) and turn it back
// into the success it was. They are only applied after such a failure.

/// A retried `insert_step` that finds a row with our fresh step id inserted it.
fn settle_retried_insert(step: &NewStep, outcome: InsertStep) -> InsertStep {
    match outcome {
        InsertStep::Existing(row) if row.step_id == step.step_id => InsertStep::Inserted(row),
        other => other,
    }
}

/// A retried `claim_step` that finds the row running under our owner, with the fence one above
/// the expected one and exactly our lease, claimed it (a heartbeat never renews a step its
/// owner does not know it holds, so the lease is still the one we wrote).
fn settle_retried_claim(claim: &ClaimStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == State::Running
                && row.fence == claim.expected_fence.saturating_add(1)
                && row.worker_id.as_deref() == Some(claim.worker_id.as_str())
                && row.lease_expires_at == Some(claim.lease_expires_at) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A retried `complete_step` that finds the row completed under our fence with our result
/// completed it (so the caller does not report our own result as adopted).
fn settle_retried_completion(complete: &CompleteStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == State::Completed
                && row.fence == complete.fence
                && row.result.as_ref() == Some(&complete.result) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A retried `record_step` that finds a completed row with our fresh step id and our result
/// recorded it.
fn settle_retried_record(record: &RecordStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.step_id == record.step.step_id
                && row.state == State::Completed
                && row.result.as_ref() == Some(&record.result) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A retried `fail_step` that finds the row in the state we asked for under our fence wrote it.
fn settle_retried_failure(fail: &FailStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == fail.state
                && row.fence == fail.fence
                && row.failure_reason.as_ref() == Some(&fail.reason) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A store whose retryable errors are retried under a policy: the engine puts one in front of
/// every store it is given ([`Engine::store`](crate::Engine::store) is one). A write whose
/// failed try committed anyway is reported as the success it was; an error the policy gave up
/// on is [`persistent`](crate::StoreError::persistent).
#[derive(Debug)]
pub struct RetryingStore {
    inner: std::sync::Arc<dyn DurableStore>,
    policy: StoreRetryPolicy,
}

/// What [`RetryingStore::retry`] saw: the last answer, and whether an earlier try failed in a
/// way that may have committed its write.
struct Tried<T> {
    result: StoreResult<T>,
    maybe_committed: bool,
}

impl RetryingStore {
    /// `inner`, retried under `policy`.
    pub fn new(inner: std::sync::Arc<dyn DurableStore>, policy: StoreRetryPolicy) -> Self {
        Self { inner, policy }
    }

    async fn retry<T, F, Fut>(&self, operation: &'static str, call: F) -> Tried<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.retry_unless_done(operation, call, || async { Ok(None) })
            .await
    }

    /// Like [`retry`](Self::retry), but before each retry asks `done` whether the failed try
    /// took effect after all, and if so answers with what `done` found instead of repeating a
    /// write that must not happen twice.
    async fn retry_unless_done<T, F, Fut, D, DoneFut>(
        &self,
        operation: &'static str,
        mut call: F,
        mut done: D,
    ) -> Tried<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
        D: FnMut() -> DoneFut,
        DoneFut: Future<Output = StoreResult<Option<T>>>,
    {
        let started = std::time::Instant::now();
        let mut failures = 0;
        loop {
            if failures > 0 {
                match done().await {
                    Ok(Some(value)) => {
                        return Tried {
                            result: Ok(value),
                            maybe_committed: true,
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        return Tried {
                            result: Err(error),
                            maybe_committed: true,
                        }
                    }
                }
            }
            let result = call().await;
            let delay = match &result {
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    store_retry_delay(&self.policy, failures, started.elapsed())
                }
                _ => None,
            };
            match delay {
                Some(delay) => {
                    if let Err(error) = &result {
                        tracing::debug!(operation, failures, %error, "retrying store operation");
                    }
                    tokio::time::sleep(delay).await;
                }
                None => {
                    // A temporary error the policy gave up on reaches the caller as persistent:
                    // nothing above retries it a second time.
                    let result = result.map_err(|error| {
                        if error.is_retryable() {
                            error.persistent()
                        } else {
                            error
                        }
                    });
                    return Tried {
                        result,
                        maybe_committed: failures > 0,
                    };
                }
            }
        }
    }

    /// Retries an operation that is safe to repeat as it is (reads, upserts, idempotent writes).
    async fn idempotent<T, F, Fut>(&self, operation: &'static str, call: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.retry(operation, call).await.result
    }

    /// Whether `attempt_id` of `task_id` exists and is in a state other than `running`, or
    /// (with `running`) is running: how a retried start or finish recognises its first try.
    async fn attempt_in_state(
        &self,
        task_id: &str,
        attempt_id: &str,
        running: bool,
    ) -> StoreResult<Option<AttemptRecord>> {
        let attempts = self
            .idempotent("list_attempts", || self.inner.list_attempts(task_id))
            .await?;
        Ok(attempts.into_iter().find(|attempt| {
            attempt.attempt_id == attempt_id && (attempt.state == State::Running) == running
        }))
    }
}

// A wrapper forwards every method, the provided ones too: a default would silently bypass
// the wrapped store.
#[async_trait]
#[warn(clippy::missing_trait_methods)]
impl DurableStore for RetryingStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()> {
        self.idempotent("register_owner", || {
            self.inner.register_owner(owner.clone())
        })
        .await
    }

    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>> {
        self.idempotent("get_owner", || self.inner.get_owner(owner_id))
            .await
    }

    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()> {
        self.idempotent("put_script", || self.inner.put_script(hash, source))
            .await
    }

    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>> {
        self.idempotent("get_script", || self.inner.get_script(hash))
            .await
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<CreatedRun> {
        let tried = self
            .retry("create_run", || self.inner.create_run(run.clone()))
            .await;
        match tried.result {
            // Fresh ids: a conflict after a lost answer is our own first try.
            Err(error) if tried.maybe_committed && error.kind() == StoreErrorKind::Conflict => {
                let task = self.get_task(&run.task_id).await?;
                let stored = self.get_run(&run.run_id).await?;
                match (task, stored) {
                    (Some(task), Some(stored)) if stored.task_id == task.task_id => {
                        Ok(CreatedRun {
                            task,
                            run: stored,
                            created: true,
                        })
                    }
                    _ => Err(error),
                }
            }
            other => other,
        }
    }

    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord> {
        self.idempotent("create_child_run", || {
            self.inner.create_child_run(child.clone())
        })
        .await
    }

    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()> {
        self.idempotent("finish_child_run", || {
            self.inner.finish_child_run(run_id, outcome.clone(), now)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        self.idempotent("get_run", || self.inner.get_run(run_id))
            .await
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        self.idempotent("get_task", || self.inner.get_task(task_id))
            .await
    }

    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart> {
        // Starting again would fail our own first attempt as abandoned: look for it first.
        self.retry_unless_done(
            "start_attempt",
            || self.inner.start_attempt(start.clone()),
            || async {
                let ours = self
                    .attempt_in_state(&start.task_id, &start.attempt_id, true)
                    .await?;
                Ok(ours.map(AttemptStart::Started))
            },
        )
        .await
        .result
    }

    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()> {
        let tried = self
            .retry("finish_attempt", || {
                self.inner.finish_attempt(finish.clone())
            })
            .await;
        match tried.result {
            // Ours only if the attempt ended exactly as we asked, at our time: a takeover or a
            // give-up also ends it, and that must stay a lost lease.
            Err(error) if tried.maybe_committed && error.kind() == StoreErrorKind::LeaseLost => {
                let end = &finish.end;
                let ended = self
                    .attempt_in_state(&finish.task_id, &finish.attempt_id, false)
                    .await?;
                match ended {
                    Some(attempt)
                        if attempt.state == end.attempt
                            && attempt.completed_at == Some(finish.now)
                            && attempt.failure_reason == end.reason =>
                    {
                        Ok(())
                    }
                    _ => Err(error),
                }
            }
            other => other,
        }
    }

    // Not retried here: a claim whose answer was lost cannot be recognised, and a repeat would
    // reuse its attempt id. The worker's loop backs off and claims afresh.
    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>> {
        self.inner.claim_next_task(claim).await
    }

    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>> {
        self.idempotent("load_steps", || self.inner.load_steps(run_id))
            .await
    }

    async fn load_run_start(&self, root_run_id: &str) -> StoreResult<RunStart> {
        self.idempotent("load_run_start", || self.inner.load_run_start(root_run_id))
            .await
    }

    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>> {
        self.idempotent("get_step", || self.inner.get_step(run_id, checkpoint_name))
            .await
    }

    async fn insert_step(&self, step: NewStep) -> StoreResult<InsertStep> {
        let tried = self
            .retry("insert_step", || self.inner.insert_step(step.clone()))
            .await;
        match tried.result {
            Ok(outcome) if tried.maybe_committed => Ok(settle_retried_insert(&step, outcome)),
            other => other,
        }
    }

    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas> {
        let tried = self
            .retry("claim_step", || self.inner.claim_step(claim.clone()))
            .await;
        match tried.result {
            Ok(outcome) if tried.maybe_committed => Ok(settle_retried_claim(&claim, outcome)),
            other => other,
        }
    }

    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas> {
        let tried = self
            .retry("complete_step", || {
                self.inner.complete_step(complete.clone())
            })
            .await;
        match tried.result {
            Ok(outcome) if tried.maybe_committed => {
                Ok(settle_retried_completion(&complete, outcome))
            }
            other => other,
        }
    }

    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        let tried = self
            .retry("record_step", || self.inner.record_step(record))
            .await;
        match tried.result {
            Ok(outcome) if tried.maybe_committed => Ok(settle_retried_record(record, outcome)),
            other => other,
        }
    }

    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas> {
        let tried = self
            .retry("fail_step", || self.inner.fail_step(fail.clone()))
            .await;
        match tried.result {
            Ok(outcome) if tried.maybe_committed => Ok(settle_retried_failure(&fail, outcome)),
            other => other,
        }
    }

    // Not retried here: a retry would write leases computed from a stale `now`. The heartbeat
    // renews every third of a lease and tolerates failures until the lease may have run out.
    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome> {
        self.inner.renew_leases(renew).await
    }

    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        self.idempotent("budget_spent", || self.inner.budget_spent(root_run_id))
            .await
    }

    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        self.idempotent("ledger_entries", || self.inner.ledger_entries(root_run_id))
            .await
    }

    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()> {
        // Stores skip event ids they already hold.
        self.idempotent("append_events", || self.inner.append_events(events))
            .await
    }

    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest> {
        self.idempotent("request_cancel", || self.inner.request_cancel(run_id, now))
            .await
    }

    async fn send_signal(&self, signal: NewSignal) -> StoreResult<SignalSend> {
        let tried = self
            .retry("send_signal", || self.inner.send_signal(signal.clone()))
            .await;
        match tried.result {
            // A fresh id: a conflict after a lost answer is our own first try.
            Err(error) if tried.maybe_committed && error.kind() == StoreErrorKind::Conflict => {
                let stored = self.list_signals(&signal.run_id).await?;
                match stored.into_iter().find(|s| s.signal_id == signal.signal_id) {
                    Some(ours) => Ok(SignalSend::Stored(ours)),
                    None => Err(error),
                }
            }
            // Our own first try, answered as a duplicate of itself.
            Ok(SignalSend::Duplicate(earlier))
                if tried.maybe_committed && earlier.signal_id == signal.signal_id =>
            {
                Ok(SignalSend::Stored(earlier))
            }
            // Our own first try committed, and the run finished before the retry.
            Ok(SignalSend::RunFinished(state)) if tried.maybe_committed => {
                let stored = self.list_signals(&signal.run_id).await?;
                match stored.into_iter().find(|s| s.signal_id == signal.signal_id) {
                    Some(ours) => Ok(SignalSend::Stored(ours)),
                    None => Ok(SignalSend::RunFinished(state)),
                }
            }
            other => other,
        }
    }

    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>> {
        self.idempotent("pending_signals", || {
            self.inner.pending_signals(run_id, names, limit)
        })
        .await
    }

    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume> {
        let tried = self
            .retry("consume_signal", || {
                self.inner.consume_signal(consume.clone())
            })
            .await;
        match tried.result {
            // Taken by our own first try, whose answer was lost.
            Ok(SignalConsume::SignalTaken(Some(signal)))
                if tried.maybe_committed
                    && signal.state == SignalState::Consumed
                    && signal.step_id.as_deref() == Some(consume.step_id.as_str()) =>
            {
                let steps = self.load_steps(&signal.run_id).await?;
                match steps
                    .into_iter()
                    .find(|step| step.step_id == consume.step_id)
                {
                    Some(step) => Ok(SignalConsume::Consumed(step)),
                    None => Ok(SignalConsume::SignalTaken(Some(signal))),
                }
            }
            other => other,
        }
    }

    async fn reject_signal(&self, signal_id: &str, reason: Value, now: i64) -> StoreResult<bool> {
        self.idempotent("reject_signal", || {
            self.inner.reject_signal(signal_id, reason.clone(), now)
        })
        .await
    }

    async fn work_available(&self) {
        self.inner.work_available().await;
    }

    async fn step_finished(&self, step_id: &str) {
        self.inner.step_finished(step_id).await;
    }

    async fn signal_sent(&self, run_id: &str) {
        self.inner.signal_sent(run_id).await;
    }
}

// A wrapper forwards every method, the provided ones too: a default would silently bypass
// the wrapped store.
#[async_trait]
#[warn(clippy::missing_trait_methods)]
impl StoreAdmin for RetryingStore {
    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>> {
        self.idempotent("list_signals", || self.inner.list_signals(run_id))
            .await
    }

    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>> {
        self.idempotent("list_open_waits", || self.inner.list_open_waits(filter))
            .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.idempotent("list_runs", || self.inner.list_runs(filter))
            .await
    }

    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        self.idempotent("list_attempts", || self.inner.list_attempts(task_id))
            .await
    }

    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        self.idempotent("read_events", || {
            self.inner.read_events(run_id, after_seq, limit)
        })
        .await
    }

    async fn read_newest_events(
        &self,
        run_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        self.idempotent("read_newest_events", || {
            self.inner.read_newest_events(run_id, limit)
        })
        .await
    }

    async fn delete_task(&self, task_id: &str) -> StoreResult<bool> {
        self.idempotent("delete_task", || self.inner.delete_task(task_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{row, SIG};
    use crate::store::StepKind;
    use serde_json::json;

    #[test]
    fn store_retries_back_off_doubling_up_to_a_cap_then_give_up() {
        let ms = std::time::Duration::from_millis;
        let policy = StoreRetryPolicy {
            max_retries: 5,
            first_backoff: ms(10),
            max_backoff: ms(50),
            max_elapsed: ms(1_000),
        };
        let waits: Vec<_> = (0..=6)
            .map(|failures| store_retry_delay(&policy, failures, ms(0)).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            waits,
            [None, Some(10), Some(20), Some(40), Some(50), Some(50), None]
        );
        assert_eq!(store_retry_delay(&StoreRetryPolicy::none(), 1, ms(0)), None);
        // Tries that took long themselves use up the time: no retry would end inside it.
        assert_eq!(store_retry_delay(&policy, 1, ms(985)), Some(ms(10)));
        assert_eq!(store_retry_delay(&policy, 1, ms(995)), None);
    }

    fn claim_of(row: &StepRecord) -> ClaimStep {
        ClaimStep {
            step_id: row.step_id.clone(),
            expected_state: State::Failed,
            expected_fence: 1,
            worker_id: "owner_a".into(),
            lease_expires_at: 900,
            now: 0,
        }
    }

    #[test]
    fn a_retried_write_that_finds_its_own_first_try_reports_success() {
        // Our insert committed before the connection dropped: same fresh step id.
        let ours = row(State::Running, Some(900), 1);
        let step = NewStep {
            step_id: ours.step_id.clone(),
            run_id: ours.run_id.clone(),
            root_run_id: ours.root_run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: ours.checkpoint_name.clone(),
            input_signature_hash: "x".into(),
            input_signature_json: SIG.into(),
            input: json!({}),
            worker_id: "owner_a".into(),
            lease_expires_at: 900,
            now: 0,
        };
        let settled = settle_retried_insert(&step, InsertStep::Existing(ours.clone()));
        assert_eq!(settled, InsertStep::Inserted(ours.clone()));
        let mut someone_elses = ours.clone();
        someone_elses.step_id = "step_other".into();
        let kept = settle_retried_insert(&step, InsertStep::Existing(someone_elses.clone()));
        assert_eq!(kept, InsertStep::Existing(someone_elses));

        // Our claim committed: fence + 1, our owner, our exact lease.
        let claimed = row(State::Running, Some(900), 2);
        let claim = claim_of(&claimed);
        let settled = settle_retried_claim(&claim, StepCas::Conflict(Some(claimed.clone())));
        assert_eq!(settled, StepCas::Applied(claimed.clone()));
        for other in [
            row(State::Running, Some(901), 2), // another lease: another claim of ours
            row(State::Running, Some(900), 3), // claimed again since
            row(State::Completed, Some(900), 2), // finished since
        ] {
            let conflict = StepCas::Conflict(Some(other));
            assert_eq!(settle_retried_claim(&claim, conflict.clone()), conflict);
        }
        let mut stranger = claimed.clone();
        stranger.worker_id = Some("owner_b".into());
        let conflict = StepCas::Conflict(Some(stranger));
        assert_eq!(settle_retried_claim(&claim, conflict.clone()), conflict);

        // Our completion committed: completed under our fence with our result.
        let done = row(State::Completed, None, 2);
        let mut complete = CompleteStep {
            step_id: done.step_id.clone(),
            fence: 2,
            result: json!({"output": "done"}),
            ledger: Vec::new(),
            now: 0,
        };
        let settled = settle_retried_completion(&complete, StepCas::Conflict(Some(done.clone())));
        assert_eq!(settled, StepCas::Applied(done.clone()));
        complete.result = json!({"output": "mine"});
        let conflict = StepCas::Conflict(Some(done.clone()));
        assert_eq!(
            settle_retried_completion(&complete, conflict.clone()),
            conflict
        );

        // Our record committed: completed, our fresh step id, our result.
        let mut recorded = row(State::Completed, None, 1);
        recorded.result = Some(json!({"output": "recorded"}));
        let record = RecordStep {
            step: NewStep {
                step_id: recorded.step_id.clone(),
                ..step.clone()
            },
            attempt_id: "attempt_a".into(),
            result: json!({"output": "recorded"}),
            ledger: Vec::new(),
            now: 0,
        };
        let settled = settle_retried_record(&record, StepCas::Conflict(Some(recorded.clone())));
        assert_eq!(settled, StepCas::Applied(recorded.clone()));
        let mut someone_elses = recorded.clone();
        someone_elses.step_id = "step_other".into();
        for other in [someone_elses, row(State::Running, Some(900), 1)] {
            let conflict = StepCas::Conflict(Some(other));
            assert_eq!(settle_retried_record(&record, conflict.clone()), conflict);
        }
        assert_eq!(
            settle_retried_record(&record, StepCas::Conflict(None)),
            StepCas::Conflict(None)
        );

        // Our failure committed: the state and reason we asked for under our fence.
        let mut failed = row(State::Failed, None, 2);
        failed.failure_reason = Some(json!({"message": "boom"}));
        let fail = FailStep {
            step_id: failed.step_id.clone(),
            fence: 2,
            state: State::Failed,
            reason: json!({"message": "boom"}),
            ledger: Vec::new(),
            now: 0,
        };
        let settled = settle_retried_failure(&fail, StepCas::Conflict(Some(failed.clone())));
        assert_eq!(settled, StepCas::Applied(failed.clone()));
        let fail_later = FailStep { fence: 3, ..fail };
        let conflict = StepCas::Conflict(Some(failed));
        assert_eq!(
            settle_retried_failure(&fail_later, conflict.clone()),
            conflict
        );
    }
}
