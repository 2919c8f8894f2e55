//! The single writer: a dedicated thread owning the write connection, fed by a channel.
//!
//! Jobs queued while a transaction runs are committed together in the next one (group
//! commit), each inside its own savepoint so one job's failure does not undo the others.
//! Durability is chosen per transaction: `synchronous = FULL` (one WAL fsync) when a job in it
//! must survive power loss — step completions, run state changes — and `NORMAL` (no fsync)
//! otherwise. In WAL mode every later FULL commit makes the earlier frames durable too.
//!
//! Deferrable jobs (events, lease renewals, bookkeeping) wait up to a few milliseconds for a
//! job that needs a transaction anyway, so a sequential workflow commits about two write
//! transactions per step instead of four.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use smol_durable::{StoreError, StoreErrorKind};
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

const DEFER_WINDOW: Duration = Duration::from_millis(5);
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
                        Err(error) => {
                            Err(StoreError::new(error.kind(), operation, error.to_string()))
                        }
                    };
                    Box::new(move |commit_error: Option<&StoreError>| {
                        let result = match (outcome, commit_error) {
                            (Err(error), _) => Err(error),
                            (Ok(_), Some(error)) => {
                                Err(StoreError::new(error.kind(), operation, error.to_string()))
                            }
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

fn stopped(operation: &'static str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        operation,
        "the SQLite writer thread has stopped",
    )
}

fn in_savepoint<R>(
    connection: &Connection,
    operation: &'static str,
    work: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    connection
        .execute_batch("SAVEPOINT job")
        .map_err(|e| map_error(operation, e))?;
    match work(connection) {
        Ok(value) => {
            connection
                .execute_batch("RELEASE job")
                .map_err(|e| map_error(operation, e))?;
            Ok(value)
        }
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(error)
        }
    }
}

fn run(connection: Connection, durability: Durability, inbox: Receiver<Job>, counters: &Counters) {
    let mut synchronous = None;
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        collect(&inbox, &mut batch);
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

/// Takes whatever else is queued; when everything so far may wait, waits a little for more.
fn collect(inbox: &Receiver<Job>, batch: &mut Vec<Job>) {
    let deadline = Instant::now() + DEFER_WINDOW;
    while batch.len() < MAX_BATCH {
        match inbox.try_recv() {
            Ok(job) => {
                batch.push(job);
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let all_deferred = batch.iter().all(|job| job.commit == Commit::Deferred);
        let left = deadline.saturating_duration_since(Instant::now());
        if !all_deferred || left.is_zero() {
            return;
        }
        match inbox.recv_timeout(left) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs a batch in one transaction; true when it committed.
fn commit_batch(connection: &Connection, batch: Vec<Job>) -> bool {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = map_error("begin", error);
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
