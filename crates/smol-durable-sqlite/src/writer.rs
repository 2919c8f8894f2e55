//! The single writer: a dedicated thread owning the write connection, fed by a channel.
//!
//! Jobs queued while a transaction runs are committed together in the next one (group
//! commit), each inside its own savepoint so one job's failure does not undo the others.
//! Durability is chosen per transaction: `synchronous = FULL` (one WAL fsync) when a job in it
//! must survive power loss — step completions, run state changes — and `NORMAL` (no fsync)
//! otherwise. In WAL mode every later FULL commit makes the earlier frames durable too.
//!
//! Deferrable jobs (events, lease renewals, bookkeeping) are held for up to 20 ms and then
//! committed together with whatever else is queued: events of many steps land in the same
//! pages, and a sequential workflow commits about one write transaction per step (its
//! `record_step`: the claim is deferred to the completion, docs/performance.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use smol_durable_core::{StoreError, StoreErrorKind};
use tokio::sync::oneshot;

use crate::connection::map_error;
use crate::Durability;

/// How a job commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Must be durable before the caller hears back.
    Durable,
    /// May commit without an fsync.
    Fast,
    /// May commit without an fsync and may wait briefly to share a transaction.
    Deferred,
}

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Runs in the open transaction (or learns why none could be opened).
type Work = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Deliver + Send>;

struct Job {
    commit: Commit,
    work: Work,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Counters>,
}

/// What the writer has committed so far.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub transactions: AtomicU64,
    pub durable_transactions: AtomicU64,
    pub jobs: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("commit", &self.commit).finish()
    }
}

/// How long deferrable jobs (events, heartbeats) may wait to be committed together.
const DEFER_WINDOW: Duration = Duration::from_millis(20);
/// Deferred jobs that trigger a commit before the window ends.
const MAX_DEFERRED: usize = 256;
/// Jobs taken from the queue per transaction.
const MAX_BATCH: usize = 512;

impl Writer {
    pub fn spawn(connection: Connection, durability: Durability) -> Result<Self, StoreError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let stats = Arc::new(Counters::default());
        let counters = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("smol-durable-sqlite-writer".to_owned())
            .spawn(move || run(connection, durability, inbox, &counters))
            .map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Other,
                    "open",
                    format!("cannot start the writer thread: {error}"),
                )
                .with_source(error)
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
        })
    }

    /// Counters of committed work.
    pub fn counters(&self) -> &Counters {
        &self.stats
    }

    /// Runs `work` in the writer's next transaction and returns its result once committed.
    pub async fn write<R, F>(
        &self,
        operation: &'static str,
        commit: Commit,
        work: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            commit,
            work: Box::new(
                move |connection: Result<&Connection, &StoreError>| -> Deliver {
                    let outcome = match connection {
                        Ok(connection) => in_savepoint(connection, operation, work),
                        Err(error) => Err(error.reported_by(operation)),
                    };
                    Box::new(move |commit_error: Option<&StoreError>| {
                        let result = match (outcome, commit_error) {
                            (Err(error), _) => Err(error),
                            (Ok(_), Some(error)) => Err(error.reported_by(operation)),
                            (Ok(value), None) => Ok(value),
                        };
                        let _ = reply.send(result);
                    })
                },
            ),
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(stopped(operation));
        }
        answer.await.map_err(|_| stopped(operation))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after it finished the queued jobs.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread is gone and does not come back: trying again cannot help.
fn stopped(operation: &'static str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        operation,
        "the SQLite writer thread has stopped; reopen the store",
    )
    .persistent()
}

fn run_statement(
    connection: &Connection,
    operation: &'static str,
    sql: &str,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(|e| map_error(operation, e))
}

fn in_savepoint<R>(
    connection: &Connection,
    operation: &'static str,
    work: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    run_statement(connection, operation, "SAVEPOINT job")?;
    match work(connection) {
        Ok(value) => {
            run_statement(connection, operation, "RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            let _ = run_statement(connection, operation, "ROLLBACK TO job");
            let _ = run_statement(connection, operation, "RELEASE job");
            Err(error)
        }
    }
}

fn run(connection: Connection, durability: Durability, inbox: Receiver<Job>, counters: &Counters) {
    let mut synchronous = None;
    let mut deferred: Vec<Job> = Vec::new();
    let mut deferred_since: Option<Instant> = None;
    let mut open = true;
    while open || !deferred.is_empty() {
        let mut batch = Vec::new();
        // Wait for work; with deferred jobs pending, only until they are due.
        let next = match deferred_since {
            None => inbox.recv().ok(),
            Some(since) => {
                let left = (since + DEFER_WINDOW).saturating_duration_since(Instant::now());
                match inbox.recv_timeout(left) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            }
        };
        if next.is_none() && deferred_since.is_none() {
            // The channel closed with nothing pending.
            break;
        }
        let mut route = |job: Job| {
            if job.commit == Commit::Deferred {
                deferred_since.get_or_insert_with(Instant::now);
                deferred.push(job);
            } else {
                batch.push(job);
            }
        };
        if let Some(job) = next {
            route(job);
        }
        for _ in 0..MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => route(job),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let due = !open
            || deferred.len() >= MAX_DEFERRED
            || deferred_since.is_some_and(|since| since.elapsed() >= DEFER_WINDOW);
        if due && !deferred.is_empty() {
            // Deferred jobs were queued first; they keep their place ahead of the batch.
            deferred.append(&mut batch);
            batch = std::mem::take(&mut deferred);
            deferred_since = None;
        }
        if batch.is_empty() {
            continue;
        }
        let durable = batch.iter().any(|job| job.commit == Commit::Durable);
        let level = match (durable, durability) {
            (true, Durability::Full) => "FULL",
            _ => "NORMAL",
        };
        if synchronous != Some(level) {
            match connection.pragma_update(None, "synchronous", level) {
                Ok(()) => synchronous = Some(level),
                Err(error) => tracing::warn!(%error, "cannot set synchronous"),
            }
        }
        counters
            .jobs
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if commit_batch(&connection, batch) {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            if durable {
                counters
                    .durable_transactions
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs a batch in one transaction; true when it committed.
fn commit_batch(connection: &Connection, batch: Vec<Job>) -> bool {
    if let Err(error) = run_statement(connection, "begin", "BEGIN IMMEDIATE") {
        for job in batch {
            (job.work)(Err(&error))(None);
        }
        return false;
    }
    let delivers: Vec<Deliver> = batch
        .into_iter()
        .map(|job| (job.work)(Ok(connection)))
        .collect();
    let committed = connection
        .execute_batch("COMMIT")
        .map_err(|e| map_error("commit", e));
    if committed.is_err() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    let error = committed.err();
    for deliver in delivers {
        deliver(error.as_ref());
    }
    error.is_none()
}
