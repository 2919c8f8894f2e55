//! Runner mode: [`Engine::submit`] queues a run for any worker; [`Engine::worker`] claims and
//! executes queued runs. Works on every store; several processes (and, on PostgreSQL, several
//! machines) share the queue, and the store's claim is the only coordination.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::context::RunnerAttempt;
use super::{Engine, RunOutput, RunRequest};
use crate::store::{
    AttemptOutcome, ClaimNextTask, ClaimScope, ClaimedTask, FinishAttempt, RunRecord, State,
};
use crate::Error;

/// Options of [`Engine::submit`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubmitOptions {
    /// Attempts a worker may make before the run fails for good (default 3).
    pub max_attempts: u32,
    /// Submitting again with the same key returns the first run instead of queueing another.
    pub idempotency_key: Option<String>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            idempotency_key: None,
        }
    }
}

impl SubmitOptions {
    /// Defaults: 3 attempts, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in all (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Deduplicates submissions.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What [`Engine::submit`] queued (or found, for a repeated idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubmittedRun {
    /// The task.
    pub task_id: String,
    /// Its root run.
    pub run_id: String,
    /// The task's state (`pending` for a new submission).
    pub state: State,
    /// False when the idempotency key matched an earlier submission.
    pub created: bool,
}

/// Options of [`Engine::worker`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Runs executed at once (default 4).
    pub concurrency: usize,
    /// How often an idle worker looks for work without a notification (default 1 s): retries
    /// whose backoff ended and parked runs whose sleep ended are found this way, and work that
    /// arrives while a store's notifications are down.
    pub poll_interval: Duration,
    /// After [`Worker::shutdown`], how long runs in flight may take to finish before they are
    /// handed back unfinished (default 30 s).
    pub shutdown_grace: Duration,
    /// Backoff before a failed run's second attempt, doubling after (default 1 s).
    pub retry_backoff: Duration,
    /// Park a run when all it waits for is sleeps ending at least this far ahead (default
    /// 30 s): the task goes back to the queue until the earliest sleep ends and the run's
    /// script engine is freed, so sleeping runs cost rows, not memory or slots. `None` keeps
    /// sleeping runs in memory.
    pub park_after: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            park_after: Some(Duration::from_secs(30)),
        }
    }
}

impl WorkerOptions {
    /// Defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs at once (at least 1).
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.concurrency = runs.max(1);
        self
    }

    /// Idle polling interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Grace period on shutdown.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Backoff between attempts.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// The parking threshold (`None`: never park).
    pub fn park_after(mut self, threshold: Option<Duration>) -> Self {
        self.park_after = threshold;
        self
    }
}

/// What a worker did, returned by [`Worker::join`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Tasks claimed.
    pub claimed: u64,
    /// Runs it completed.
    pub completed: u64,
    /// Attempts that failed (the run may be retried by any worker).
    pub failed: u64,
    /// Runs cancelled while it executed them.
    pub cancelled: u64,
    /// Runs handed back unfinished at shutdown.
    pub released: u64,
    /// Times a run was parked on a long sleep.
    pub parked: u64,
}

impl WorkerReport {
    fn count(&mut self, outcome: &Result<RunOutput, Error>) {
        match outcome {
            Ok(_) => self.completed += 1,
            Err(Error::Cancelled) => self.cancelled += 1,
            Err(Error::Released) => self.released += 1,
            Err(Error::Parked { .. }) => self.parked += 1,
            Err(_) => self.failed += 1,
        }
    }
}

/// A running worker: claims runner tasks until [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Worker {
    owner_id: String,
    stop: CancellationToken,
    join: JoinHandle<Result<WorkerReport, Error>>,
}

impl Worker {
    /// The worker's owner id (the engine's).
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

    /// Stops claiming. Runs in flight get the grace period to finish, then are handed back
    /// unfinished so another worker continues them at once. Returns immediately; `join` waits.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Whether the worker has stopped (after [`shutdown`](Self::shutdown), or because its task
    /// failed).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits for the worker to stop (after [`shutdown`](Self::shutdown)); an engine that
    /// cannot execute runs ([`EngineBuilder::build_submitter`](crate::EngineBuilder::build_submitter))
    /// stops its worker at once with [`Error::InvalidRequest`].
    pub async fn join(self) -> Result<WorkerReport, Error> {
        self.join
            .await
            .map_err(|error| Error::internal("the worker task died", Some(Box::new(error))))?
    }
}

impl Engine {
    /// Queues a run for any worker ([`Engine::worker`], CLI `worker`): a task with
    /// `claim_scope = 'runner'`. Nothing executes in this process. The script is stored
    /// content-addressed with the task, so a worker without the file can run it.
    pub async fn submit(
        &self,
        request: RunRequest,
        options: SubmitOptions,
    ) -> Result<SubmittedRun, Error> {
        let mut new_run = self.new_run(&request, ClaimScope::Runner).await?;
        new_run.max_attempts = options.max_attempts.max(1);
        new_run.idempotency_key = options.idempotency_key;
        let created = self.shared.store.create_run(new_run).await?;
        Ok(SubmittedRun {
            task_id: created.task.task_id,
            run_id: created.run.run_id,
            state: created.task.state,
            created: created.created,
        })
    }

    /// Starts a worker on the current tokio runtime: it claims the oldest eligible runner task
    /// (pending and due, or running with an expired lease), executes up to
    /// `options.concurrency` runs at once, retries failed attempts with backoff until the task's
    /// `max_attempts`, and idles cheaply (woken by the store's notifications where it has them).
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        let stop = CancellationToken::new();
        let engine = self.clone();
        let stopped = stop.clone();
        let join = tokio::spawn(async move {
            engine.shared.check_executes()?;
            Ok(work(engine, options, stopped).await)
        });
        Worker {
            owner_id: self.owner_id().to_owned(),
            stop,
            join,
        }
    }

    /// Claims the next runner task for this engine, if any is eligible.
    async fn claim_next(&self) -> Result<Option<ClaimedTask>, Error> {
        let shared = &self.shared;
        self.register_owner().await?;
        let now = shared.clock.now_ms();
        let ttl = i64::try_from(shared.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(shared
            .store
            .claim_next_task(ClaimNextTask {
                scope: ClaimScope::Runner,
                owner_id: shared.owner_id.clone(),
                attempt_id: crate::new_id("attempt"),
                lease_expires_at: now.saturating_add(ttl),
                now,
            })
            .await?)
    }

    /// Executes a claimed task. If it cannot even start (its script or provider is missing
    /// here), the attempt is recorded as failed at once instead of waiting for its lease.
    async fn execute_claimed(
        &self,
        claimed: ClaimedTask,
        options: &WorkerOptions,
        release: CancellationToken,
    ) -> Result<RunOutput, Error> {
        let ClaimedTask {
            task,
            run,
            attempt,
            failed_attempts,
            ..
        } = claimed;
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let runner = RunnerAttempt {
            max_attempts: task.max_attempts,
            retry_backoff_ms: millis(options.retry_backoff),
            release,
            failed_before: failed_attempts,
            park_after_ms: options.park_after.map(millis),
        };
        let prepared = async {
            let cancel = self
                .register_live_after_previous_attempt(&run.run_id)
                .await?;
            let ready = async {
                let (settings, _) = self.shared.settings(&run, None).await?;
                if self.shared.provider(&settings.provider).is_none() {
                    // Another worker may have it: an ordinary, retried failure.
                    return Err(Error::workflow(format!(
                        "this worker has no agent provider {:?} (registered: {})",
                        settings.provider,
                        self.shared.provider_names().join(", ")
                    )));
                }
                let source = self.submitted_source(&run).await?;
                Ok((settings, source))
            }
            .await;
            if ready.is_err() {
                self.shared.unregister_live(&run.run_id);
            }
            ready.map(|(settings, source)| (settings, source, cancel))
        }
        .await;
        match prepared {
            Ok((settings, source, cancel)) => {
                self.shared
                    .spawn_attempt(run, attempt, source, settings, cancel, Some(runner))
                    .join()
                    .await
            }
            Err(error) => {
                let now = self.shared.clock.now_ms();
                let outcome = match &error {
                    // This process's previous attempt at the run has still not let go: hand
                    // the claim back for later without counting it as a failed attempt.
                    Error::RunBusy { .. } => AttemptOutcome::Released {
                        not_before: Some(now.saturating_add(
                            i64::try_from(runner.retry_backoff_ms).unwrap_or(i64::MAX),
                        )),
                    },
                    _ => AttemptOutcome::Failed {
                        reason: error.failure_reason(),
                        retry_at: crate::decide::attempt_retry_at(
                            &error,
                            runner.failed_before + 1,
                            runner.max_attempts,
                            runner.retry_backoff_ms,
                            now,
                        ),
                    },
                };
                let finished = self
                    .shared
                    .store
                    .finish_attempt(FinishAttempt::new(
                        &attempt,
                        &self.shared.owner_id,
                        &outcome,
                        now,
                    ))
                    .await;
                if let Err(store_error) = finished {
                    tracing::warn!(%store_error, "could not record a claimed run that cannot start");
                }
                Err(error)
            }
        }
    }

    /// The script a run was submitted with: the stored copy (what the submitter ran; cached by
    /// its hash), else the file at its stored path.
    async fn submitted_source(&self, run: &RunRecord) -> Result<crate::WorkflowSource, Error> {
        if let (Some(hash), Some(path)) = (&run.workflow.script_hash, &run.workflow.script_path) {
            let text = match self.shared.known_script(hash) {
                Some(text) => Some(text),
                None => self.shared.store.get_script(hash).await?,
            };
            if let Some(text) = text {
                self.shared.remember_script(hash, &text);
                return Ok(crate::WorkflowSource::inline(path.as_str(), text));
            }
        }
        self.stored_source(run).await
    }
}

/// The worker loop: claim while there is capacity, idle until notified or the poll interval
/// passes, and on shutdown let runs finish within the grace period, then release the rest.
async fn work(engine: Engine, options: WorkerOptions, stop: CancellationToken) -> WorkerReport {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let release = CancellationToken::new();
    let report = Arc::new(Mutex::new(WorkerReport::default()));
    let mut running = JoinSet::new();
    let store = Arc::clone(engine.store());
    let mut backoff = Duration::from_millis(100);
    loop {
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            permit = Arc::clone(&slots).acquire_owned() => permit.ok(),
        };
        let Some(permit) = permit else { break };
        if stop.is_cancelled() {
            break;
        }
        match engine.claim_next().await {
            Ok(Some(claimed)) => {
                backoff = Duration::from_millis(100);
                let span = tracing::info_span!("worker_run", run_id = %claimed.run.run_id, attempt = claimed.attempt.attempt);
                let provider = claimed
                    .run
                    .workflow
                    .provider
                    .clone()
                    .unwrap_or_else(|| engine.shared.default_provider.clone());
                if provider == crate::DebugProvider::NAME {
                    tracing::warn!(run_id = %claimed.run.run_id, %provider, "claimed a run whose agents use the offline debug provider: they get fake answers");
                } else {
                    tracing::info!(run_id = %claimed.run.run_id, %provider, "claimed a run");
                }
                if let Ok(mut report) = report.lock() {
                    report.claimed += 1;
                }
                let (engine, options, release) =
                    (engine.clone(), options.clone(), release.child_token());
                let report = Arc::clone(&report);
                running.spawn(tracing::Instrument::instrument(
                    async move {
                        let outcome = engine.execute_claimed(claimed, &options, release).await;
                        if let Err(error) = &outcome {
                            tracing::info!(%error, "run attempt ended without a result");
                        }
                        if let Ok(mut report) = report.lock() {
                            report.count(&outcome);
                        }
                        drop(permit);
                    },
                    span,
                ));
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    () = store.work_available() => {}
                    // Retries and parked runs come due without a notification.
                    () = tokio::time::sleep(options.poll_interval) => {}
                    () = stop.cancelled() => {}
                }
            }
            Err(error) => {
                // A database that is down or unreachable: keep the runs in flight, back off,
                // and resume claiming when it answers again.
                drop(permit);
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "could not claim work");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let grace = tokio::time::sleep(options.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = running.join_next() => {
                if next.is_none() {
                    break;
                }
            }
            () = &mut grace, if !release.is_cancelled() => release.cancel(),
        }
    }
    report.lock().map(|report| *report).unwrap_or_default()
}

impl Engine {
    /// Registers a claimed run as live in this process. The task of an attempt that just ended
    /// here becomes claimable a moment before that attempt leaves the registry, so a busy
    /// registry is given a short while to clear before the claim is handed back.
    async fn register_live_after_previous_attempt(
        &self,
        run_id: &str,
    ) -> Result<CancellationToken, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.shared.register_live(run_id) {
                Err(Error::RunBusy { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                registered => return registered,
            }
        }
    }
}
