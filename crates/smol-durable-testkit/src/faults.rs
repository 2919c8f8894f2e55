//! A store wrapper that fails or delays a seeded fraction of operations.
//!
//! [`FaultyStore`] sits between an engine and a real store and, by a seeded random draw per
//! operation, lets it through, delays it, fails it before it reaches the store, fails it *after*
//! the store committed it (the answer is lost, like a connection dropped after `COMMIT`), or
//! fails it with a terminal error. The engine must retry the retryable ones without running
//! anything twice and surface the terminal ones clearly; the conformance suite checks both.
//!
//! ```
//! use std::sync::Arc;
//! use smol_durable_core::{DurableStore, MemoryStore};
//! use smol_durable_testkit::{FaultPlan, FaultyStore};
//!
//! let inner: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
//! let flaky = FaultyStore::new(inner, FaultPlan::retryable(7, 0.10));
//! assert_eq!(flaky.counts().calls, 0);
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use smol_durable_core::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, EventRow, FailStep, FinishAttempt, InsertStep,
    LedgerEntry, NewChildRun, NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases, RenewOutcome,
    RunFilter, RunOutcome, RunRecord, RunStart, StartAttempt, StepCas, StepRecord, StoreAdmin,
    StoreCapabilities, StoreResult, TaskRecord,
};
use smol_durable_core::store::{
    ConsumeSignal, NewSignal, SignalConsume, SignalRecord, SignalSend, WaitFilter,
};
use smol_durable_core::{DurableStore, StoreError, StoreErrorKind};

/// Which faults to inject, and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// Seed of the draws (the same seed and the same sequence of calls give the same faults).
    pub seed: u64,
    /// Fraction of operations that fail (0.0 – 1.0).
    pub failure_rate: f64,
    /// Of the failures, the fraction that fail *after* the inner store committed the operation.
    pub after_commit_share: f64,
    /// Of the failures, the fraction that are terminal ([`StoreErrorKind::Other`]) rather than
    /// retryable ([`StoreErrorKind::Unavailable`]).
    pub terminal_share: f64,
    /// Fraction of the operations let through that are delayed first.
    pub delay_rate: f64,
    /// Longest injected delay.
    pub max_delay: Duration,
}

impl FaultPlan {
    /// No faults: every operation goes straight through.
    pub fn none() -> Self {
        Self {
            seed: 0,
            failure_rate: 0.0,
            after_commit_share: 0.0,
            terminal_share: 0.0,
            delay_rate: 0.0,
            max_delay: Duration::ZERO,
        }
    }

    /// Retryable failures at `failure_rate`, half of them after the write committed, and as
    /// many operations delayed by up to 5 ms.
    pub fn retryable(seed: u64, failure_rate: f64) -> Self {
        Self {
            seed,
            failure_rate,
            after_commit_share: 0.5,
            terminal_share: 0.0,
            delay_rate: failure_rate,
            max_delay: Duration::from_millis(5),
        }
    }

    /// Terminal failures only, at `failure_rate`.
    pub fn terminal(seed: u64, failure_rate: f64) -> Self {
        Self {
            seed,
            failure_rate,
            after_commit_share: 0.0,
            terminal_share: 1.0,
            delay_rate: 0.0,
            max_delay: Duration::ZERO,
        }
    }
}

/// How many operations a [`FaultyStore`] saw and what it did to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Operations called.
    pub calls: u64,
    /// Failed before reaching the store (retryable).
    pub failed_before: u64,
    /// Reached and committed by the store, then reported as failed (retryable).
    pub failed_after_commit: u64,
    /// Failed with a terminal error, before reaching the store.
    pub terminal: u64,
    /// Delayed, then let through.
    pub delayed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failed_before: AtomicU64,
    failed_after_commit: AtomicU64,
    terminal: AtomicU64,
    delayed: AtomicU64,
}

enum Fault {
    None,
    Delay(Duration),
    Before,
    AfterCommit,
    Terminal,
}

/// A [`DurableStore`] that injects the faults of a [`FaultPlan`] into another store.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn DurableStore>,
    plan: FaultPlan,
    rng: Mutex<fastrand::Rng>,
    counters: Counters,
    enabled: std::sync::atomic::AtomicBool,
    armed: Mutex<Vec<&'static str>>,
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn DurableStore>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            rng: Mutex::new(fastrand::Rng::with_seed(plan.seed)),
            counters: Counters::default(),
            enabled: std::sync::atomic::AtomicBool::new(true),
            armed: Mutex::new(Vec::new()),
        }
    }

    /// Makes the next call of `operation` (a [`DurableStore`] method name, e.g.
    /// `"complete_step"`) reach the store and commit, then fail retryably as if the answer had
    /// been lost; on top of the plan.
    pub fn fail_after_commit_once(&self, operation: &'static str) {
        if let Ok(mut armed) = self.armed.lock() {
            armed.push(operation);
        }
    }

    /// Operations armed with [`fail_after_commit_once`](Self::fail_after_commit_once) that
    /// have not been called since.
    pub fn armed(&self) -> Vec<&'static str> {
        self.armed
            .lock()
            .map(|armed| armed.clone())
            .unwrap_or_default()
    }

    /// What was injected so far.
    pub fn counts(&self) -> FaultCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultCounts {
            calls: read(&self.counters.calls),
            failed_before: read(&self.counters.failed_before),
            failed_after_commit: read(&self.counters.failed_after_commit),
            terminal: read(&self.counters.terminal),
            delayed: read(&self.counters.delayed),
        }
    }

    /// Stops (or resumes) injecting; operations go straight through while stopped.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    fn draw(&self) -> Fault {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut rng = match self.rng.lock() {
            Ok(rng) => rng,
            Err(poisoned) => poisoned.into_inner(),
        };
        let plan = &self.plan;
        if rng.f64() < plan.failure_rate {
            if rng.f64() < plan.terminal_share {
                Fault::Terminal
            } else if rng.f64() < plan.after_commit_share {
                Fault::AfterCommit
            } else {
                Fault::Before
            }
        } else if rng.f64() < plan.delay_rate {
            Fault::Delay(plan.max_delay.mul_f64(rng.f64()))
        } else {
            Fault::None
        }
    }

    fn take_armed(&self, operation: &str) -> bool {
        let Ok(mut armed) = self.armed.lock() else {
            return false;
        };
        match armed.iter().position(|armed| *armed == operation) {
            Some(index) => {
                armed.remove(index);
                true
            }
            None => false,
        }
    }

    async fn inject<T, F, Fut>(&self, operation: &'static str, call: F) -> StoreResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        let fault = if self.take_armed(operation) {
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            Fault::AfterCommit
        } else {
            self.draw()
        };
        match fault {
            Fault::None => call().await,
            Fault::Delay(delay) => {
                count(&self.counters.delayed);
                tokio::time::sleep(delay).await;
                call().await
            }
            Fault::Before => {
                count(&self.counters.failed_before);
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    operation,
                    "injected fault: connection lost before the operation reached the database",
                ))
            }
            Fault::AfterCommit => {
                count(&self.counters.failed_after_commit);
                let _lost = call().await;
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    operation,
                    "injected fault: connection lost after the operation committed",
                ))
            }
            Fault::Terminal => {
                count(&self.counters.terminal);
                Err(StoreError::new(
                    StoreErrorKind::Other,
                    operation,
                    "injected terminal fault",
                ))
            }
        }
    }
}

// A wrapper forwards every method, the provided ones too: a default would silently bypass
// the wrapped store.
#[async_trait]
#[warn(clippy::missing_trait_methods)]
impl DurableStore for FaultyStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }

    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()> {
        self.inject("register_owner", || self.inner.register_owner(owner))
            .await
    }

    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>> {
        self.inject("get_owner", || self.inner.get_owner(owner_id))
            .await
    }

    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()> {
        self.inject("put_script", || self.inner.put_script(hash, source))
            .await
    }

    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>> {
        self.inject("get_script", || self.inner.get_script(hash))
            .await
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<CreatedRun> {
        self.inject("create_run", || self.inner.create_run(run))
            .await
    }

    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord> {
        self.inject("create_child_run", || self.inner.create_child_run(child))
            .await
    }

    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()> {
        self.inject("finish_child_run", || {
            self.inner.finish_child_run(run_id, outcome, now)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        self.inject("get_run", || self.inner.get_run(run_id)).await
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        self.inject("get_task", || self.inner.get_task(task_id))
            .await
    }

    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart> {
        self.inject("start_attempt", || self.inner.start_attempt(start))
            .await
    }

    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()> {
        self.inject("finish_attempt", || self.inner.finish_attempt(finish))
            .await
    }

    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>> {
        self.inject("claim_next_task", || self.inner.claim_next_task(claim))
            .await
    }

    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>> {
        self.inject("load_steps", || self.inner.load_steps(run_id))
            .await
    }

    async fn load_run_start(&self, root_run_id: &str) -> StoreResult<RunStart> {
        self.inject("load_run_start", || self.inner.load_run_start(root_run_id))
            .await
    }

    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>> {
        self.inject("get_step", || self.inner.get_step(run_id, checkpoint_name))
            .await
    }

    async fn insert_step(&self, step: NewStep) -> StoreResult<InsertStep> {
        self.inject("insert_step", || self.inner.insert_step(step))
            .await
    }

    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas> {
        self.inject("claim_step", || self.inner.claim_step(claim))
            .await
    }

    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas> {
        self.inject("complete_step", || self.inner.complete_step(complete))
            .await
    }

    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        self.inject("record_step", || self.inner.record_step(record))
            .await
    }

    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas> {
        self.inject("fail_step", || self.inner.fail_step(fail))
            .await
    }

    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome> {
        self.inject("renew_leases", || self.inner.renew_leases(renew))
            .await
    }

    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        self.inject("budget_spent", || self.inner.budget_spent(root_run_id))
            .await
    }

    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        self.inject("ledger_entries", || self.inner.ledger_entries(root_run_id))
            .await
    }

    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()> {
        self.inject("append_events", || self.inner.append_events(events))
            .await
    }

    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest> {
        self.inject("request_cancel", || self.inner.request_cancel(run_id, now))
            .await
    }

    async fn send_signal(&self, signal: NewSignal) -> StoreResult<SignalSend> {
        self.inject("send_signal", || self.inner.send_signal(signal))
            .await
    }

    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>> {
        self.inject("pending_signals", || {
            self.inner.pending_signals(run_id, names, limit)
        })
        .await
    }

    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume> {
        self.inject("consume_signal", || self.inner.consume_signal(consume))
            .await
    }

    async fn reject_signal(
        &self,
        signal_id: &str,
        reason: serde_json::Value,
        now: i64,
    ) -> StoreResult<bool> {
        self.inject("reject_signal", || {
            self.inner.reject_signal(signal_id, reason, now)
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
impl StoreAdmin for FaultyStore {
    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>> {
        self.inject("list_signals", || self.inner.list_signals(run_id))
            .await
    }

    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>> {
        self.inject("list_open_waits", || self.inner.list_open_waits(filter))
            .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.inject("list_runs", || self.inner.list_runs(filter))
            .await
    }

    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        self.inject("list_attempts", || self.inner.list_attempts(task_id))
            .await
    }

    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        self.inject("read_events", || {
            self.inner.read_events(run_id, after_seq, limit)
        })
        .await
    }

    async fn read_newest_events(
        &self,
        run_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        self.inject("read_newest_events", || {
            self.inner.read_newest_events(run_id, limit)
        })
        .await
    }

    async fn delete_task(&self, task_id: &str) -> StoreResult<bool> {
        self.inject("delete_task", || self.inner.delete_task(task_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol_durable_core::MemoryStore;

    fn owner(id: &str) -> OwnerRecord {
        OwnerRecord {
            owner_id: id.to_owned(),
            pid: 1,
            hostname: "test".to_owned(),
            started_at: 0,
            heartbeat_at: 0,
        }
    }

    #[tokio::test]
    async fn faults_follow_the_plan_and_after_commit_failures_do_commit() {
        let inner: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
        let flaky = FaultyStore::new(Arc::clone(&inner), FaultPlan::retryable(42, 0.3));
        let mut failed = Vec::new();
        for i in 0..1_000 {
            let id = format!("owner_{i}");
            if let Err(error) = flaky.register_owner(owner(&id)).await {
                assert!(error.is_retryable(), "{error}");
                failed.push(id);
            }
        }
        let counts = flaky.counts();
        assert_eq!(counts.calls, 1_000);
        assert_eq!(counts.terminal, 0);
        assert_eq!(
            failed.len() as u64,
            counts.failed_before + counts.failed_after_commit
        );
        // About 30 % fail, about half of those after committing.
        assert!((200..400).contains(&failed.len()), "{counts:?}");
        assert!(counts.failed_after_commit > 50 && counts.failed_before > 50);
        let mut committed = 0;
        for id in &failed {
            if inner.get_owner(id).await.ok().flatten().is_some() {
                committed += 1;
            }
        }
        assert_eq!(committed, counts.failed_after_commit);

        // Same seed, same calls: same faults.
        let again = FaultyStore::new(inner, FaultPlan::retryable(42, 0.3));
        for i in 0..1_000 {
            let _ = again.register_owner(owner(&format!("owner_{i}"))).await;
        }
        assert_eq!(again.counts(), counts);
    }

    #[tokio::test]
    async fn terminal_faults_are_not_retryable_and_a_disabled_store_lets_everything_through() {
        let inner: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
        let broken = FaultyStore::new(inner, FaultPlan::terminal(1, 1.0));
        let error = broken
            .register_owner(owner("owner_a"))
            .await
            .err()
            .map(|error| (error.kind(), error.is_retryable()));
        assert_eq!(error, Some((StoreErrorKind::Other, false)));
        broken.set_enabled(false);
        assert!(broken.register_owner(owner("owner_a")).await.is_ok());
        assert_eq!(broken.counts().terminal, 1);
    }

    #[tokio::test]
    async fn a_temporary_error_the_engine_gave_up_on_is_persistent() {
        let inner: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
        let down = Arc::new(FaultyStore::new(inner, FaultPlan::retryable(7, 1.0)));
        let policy = smol_durable_core::store::StoreRetryPolicy {
            max_retries: 2,
            first_backoff: std::time::Duration::from_millis(1),
            ..Default::default()
        };
        let engine = smol_durable_core::Engine::builder()
            .store(down.clone())
            .script_engine(Arc::new(crate::ScriptedEngine::new()))
            .provider(Arc::new(crate::ScriptedProvider::new("scripted")))
            .limits(smol_durable_core::Limits {
                store_retry: policy,
                ..Default::default()
            })
            .build()
            .expect("engine");
        let error = engine
            .store()
            .register_owner(owner("owner_a"))
            .await
            .expect_err("the store is down");
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        assert_eq!(error.status(), smol_durable_core::ErrorStatus::Persistent);
        assert!(!error.is_retryable(), "nothing retries it a second time");
        assert_eq!(down.counts().calls, 3, "one try and two retries");
    }
}
