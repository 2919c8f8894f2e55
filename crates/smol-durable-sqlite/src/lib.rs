//! The SQLite [`DurableStore`] for smol-durable: the embedded default. (The crate root holds
//! the store type, its opening and options, and the trait implementation that hands each
//! operation to the writer thread or a reader; the SQL is in `sql/`.)
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smol_durable_core::StoreError> {
//! use smol_durable_core::DurableStore;
//! use smol_durable_sqlite::SqliteStore;
//!
//! let dir = tempfile::tempdir().map_err(|e| smol_durable_core::StoreError::new(
//!     smol_durable_core::StoreErrorKind::Other, "doc", e.to_string()))?;
//! let store = SqliteStore::open(dir.path().join("runs.db")).await?;
//! assert!(store.describe().ends_with("runs.db"));
//! # Ok(())
//! # }
//! ```
//!
//! - The schema is smol-workflows' (`sw_workflow_*` tables); databases written by smol-wf 0.3.4
//!   open, migrate forward in place (migrations 4+ keep every row: they add tables, columns
//!   and indexes, drop indexes no query reads, and rebuild the events table without its
//!   reference to steps), and resume.
//! - One writer thread owns the write connection; concurrent writes share transactions and
//!   fsyncs (group commit). Reads use a small pool of connections on blocking threads, so async
//!   callers never block a tokio worker.
//! - [`Durability::Full`] (default): a completed step survives power loss, at most one fsync per
//!   completion, none for claims. [`Durability::Normal`]: no fsync on commit; a power cut may
//!   lose the last completions (they run again), never corrupt the database.
//! - Several processes may share one file: SQLite's locking serializes writers, and every
//!   decision is a compare-and-set, so two processes never both win a step.
#![deny(missing_docs)]

mod changes;
mod connection;
#[doc(hidden)]
pub mod fuzzing;
mod migrate;
mod rows;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::Value;
use smol_durable_core::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, EventRow, FailStep, FinishAttempt, InsertStep,
    LedgerEntry, NewChildRun, NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases, RenewOutcome,
    RunFilter, RunOutcome, RunRecord, StartAttempt, StepCas, StepRecord, StoreAdmin,
    StoreCapabilities, StoreResult, TaskRecord,
};
use smol_durable_core::store::{
    ConsumeSignal, NewSignal, SignalConsume, SignalRecord, SignalSend, WaitFilter,
};
use smol_durable_core::{Clock, DurableStore, StoreError, StoreErrorKind, SystemClock};

pub use migrate::SCHEMA_VERSION;
use writer::{Commit, Writer};

/// How hard a commit tries to survive power loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL` for step completions and run state changes: once `complete_step`
    /// returns, the step survives power loss. Claims, events and heartbeats never wait for an
    /// fsync.
    #[default]
    Full,
    /// `synchronous = NORMAL` for everything: no fsync on commit. A power cut (not a process
    /// crash) may lose the last completions, which then run again.
    Normal,
}

/// Counters of a store handle's writes since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Of those, the ones committed with `synchronous = FULL` requested.
    pub durable_transactions: u64,
    /// Write operations (each store call is one), grouped into those transactions.
    pub operations: u64,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of commits (default [`Durability::Full`]).
    pub durability: Durability,
    /// How long a write waits for another process's lock before failing with a retryable
    /// `Unavailable` error (default 5 s).
    pub busy_timeout: Duration,
    /// Read connections kept open (default 4).
    pub max_idle_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
        }
    }
}

impl SqliteOptions {
    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

#[derive(Debug)]
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl Readers {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(connection) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(connection);
        }
        let connection = connection::open(&self.path, self.busy_timeout)?;
        connection
            .pragma_update(None, "query_only", "ON")
            .map_err(|e| connection::map_error("open", e))?;
        Ok(connection)
    }

    fn give_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(connection);
            }
        }
    }
}

/// A [`DurableStore`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
    clock: SystemClock,
    /// Set by [`SqliteStore::open_read_only`]: writes are refused.
    read_only: bool,
    /// Where a smol-wf 0.3.4 database was copied before this handle upgraded it.
    smol_wf_backup: Option<PathBuf>,
    /// The private migrated copy a read-only handle reads an older database from (deleted
    /// with the handle).
    _snapshot: Option<tempfile::TempDir>,
    /// Commits of other processes, for waits ([`DurableStore::signal_sent`]).
    changes: changes::Changes,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// Fails clearly, without creating anything, when the directory is missing or read-only,
    /// and without changing anything when the database was written by a newer version.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || Self::open_blocking(path, options)).await;
        opened.map_err(|error| task_died("open", error))?
    }

    fn open_blocking(path: PathBuf, options: SqliteOptions) -> StoreResult<Self> {
        check_directory(&path)?;
        create_owner_only(&path)?;
        let connection = connection::open(&path, options.busy_timeout)?;
        let smol_wf_backup = match migrate::applied_version(&connection)? {
            Some(migrate::SMOL_WF_SCHEMA_VERSION) => Some(back_up(&connection, &path)?),
            _ => None,
        };
        migrate::migrate(&connection, SystemClock.now_ms())?;
        let mut store = Self::on_connection(path.clone(), &path, connection, &options)?;
        store.smol_wf_backup = smol_wf_backup;
        Ok(store)
    }

    /// Opens an existing database to read it: nothing is created, migrated or written. A
    /// database of an older schema (one written by smol-wf 0.3.4, say) is read from a migrated
    /// private copy, so smol-wf can still open the original. Write operations fail with
    /// [`StoreErrorKind::Unsupported`].
    ///
    /// A missing file is a [`StoreErrorKind::NotFound`] error; a database written by a newer
    /// smol-durable is refused as [`SqliteStore::open`] refuses it.
    pub async fn open_read_only(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            Self::open_read_only_blocking(path, SqliteOptions::default())
        })
        .await;
        opened.map_err(|error| task_died("open", error))?
    }

    fn open_read_only_blocking(path: PathBuf, options: SqliteOptions) -> StoreResult<Self> {
        if !path.is_file() {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                "open",
                format!("database {} does not exist", path.display()),
            ));
        }
        let source = connection::open_read_only(&path, options.busy_timeout)?;
        let version = migrate::applied_version(&source)?;
        let mut store = match version {
            Some(version) if version == migrate::SCHEMA_VERSION => {
                drop(source);
                let connection = connection::open_existing(&path, options.busy_timeout)?;
                Self::on_connection(path.clone(), &path, connection, &options)?
            }
            Some(version) if version > migrate::SCHEMA_VERSION => {
                return Err(smol_durable_core::store::newer_schema(
                    "the database",
                    version,
                    migrate::SCHEMA_VERSION,
                ))
            }
            None => {
                return Err(StoreError::new(
                    StoreErrorKind::Corrupt,
                    "open",
                    format!(
                    "{} is not a smol-durable or smol-wf database (it has no sw_migrations table)",
                    path.display()
                ),
                ))
            }
            Some(_) => {
                let snapshot = tempfile::tempdir().map_err(|error| {
                    StoreError::new(
                        StoreErrorKind::Unavailable,
                        "open",
                        format!(
                            "cannot make a private copy of {} to read it: {error}",
                            path.display()
                        ),
                    )
                })?;
                let copy = snapshot.path().join("snapshot.db");
                vacuum_into(&source, &copy)?;
                drop(source);
                let connection = connection::open(&copy, options.busy_timeout)?;
                migrate::migrate(&connection, SystemClock.now_ms())?;
                let mut store = Self::on_connection(path.clone(), &copy, connection, &options)?;
                store._snapshot = Some(snapshot);
                store
            }
        };
        store.read_only = true;
        Ok(store)
    }

    /// A handle on an open, migrated connection to `file`, known to users as `path`.
    fn on_connection(
        path: PathBuf,
        file: &Path,
        connection: Connection,
        options: &SqliteOptions,
    ) -> StoreResult<Self> {
        let writer = Writer::spawn(connection, options.durability)?;
        Ok(Self {
            readers: Arc::new(Readers {
                path: file.to_path_buf(),
                busy_timeout: options.busy_timeout,
                idle: Mutex::new(Vec::new()),
                max_idle: options.max_idle_readers,
            }),
            path,
            writer,
            clock: SystemClock,
            read_only: false,
            smol_wf_backup: None,
            _snapshot: None,
            changes: changes::Changes::new(file),
        })
    }

    /// Where the database, last written by smol-wf 0.3.4, was copied before this handle
    /// upgraded it (smol-wf refuses an upgraded file; the copy still opens in smol-wf). `None`
    /// when nothing was upgraded.
    pub fn smol_wf_backup(&self) -> Option<&Path> {
        self.smol_wf_backup.as_deref()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this handle's writer has committed so far (for benchmarks and diagnostics).
    pub fn write_stats(&self) -> WriteStats {
        let counters = self.writer.counters();
        WriteStats {
            transactions: counters.transactions.load(Ordering::Relaxed),
            durable_transactions: counters.durable_transactions.load(Ordering::Relaxed),
            operations: counters.jobs.load(Ordering::Relaxed),
        }
    }

    async fn read<R, F>(&self, operation: &'static str, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let outcome = tokio::task::spawn_blocking(move || {
            let connection = readers.take()?;
            let result = work(&connection);
            readers.give_back(connection);
            result
        })
        .await;
        outcome.map_err(|error| task_died(operation, error))?
    }

    async fn write<R, F>(&self, operation: &'static str, commit: Commit, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        if self.read_only {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                operation,
                format!("{} was opened read-only", self.path.display()),
            ));
        }
        self.writer.write(operation, commit, work).await
    }
}

/// Copies the database, consistent as of now, to `target` (which must not exist).
fn vacuum_into(connection: &Connection, target: &Path) -> StoreResult<()> {
    let target = target.to_str().ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::Unsupported,
            "open",
            format!("{} is not a UTF-8 path", target.display()),
        )
    })?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .map(drop)
        .map_err(|error| connection::map_error("open", error))
}

/// Copies a smol-wf 0.3.4 database beside itself before its first upgrade:
/// `<name>.smol-wf-0.3.4.bak` (or `.bak.2`, … when taken).
fn back_up(connection: &Connection, path: &Path) -> StoreResult<PathBuf> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflows.db".to_owned());
    let candidates = std::iter::once(format!("{name}.smol-wf-0.3.4.bak"))
        .chain((2..).map(|n| format!("{name}.smol-wf-0.3.4.bak.{n}")));
    for candidate in candidates.take(100) {
        let target = path.with_file_name(candidate);
        if !target.exists() {
            match vacuum_into(connection, &target) {
                Ok(()) => return Ok(target),
                // Another process upgrading the same file took this name meanwhile.
                Err(_) if target.exists() => continue,
                Err(error) => return Err(error),
            }
        }
    }
    Err(StoreError::new(
        StoreErrorKind::Unavailable,
        "open",
        format!(
            "cannot back up {} before upgrading it: 100 backups exist beside it",
            path.display()
        ),
    ))
}

fn check_directory(path: &Path) -> StoreResult<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A directory that is missing, not a directory or read-only stays so: trying again cannot
    // help, so the error is not retryable.
    let unusable = |problem: String| {
        Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "open",
            format!("cannot open SQLite database {}: {problem}", path.display()),
        )
        .persistent())
    };
    match std::fs::metadata(directory) {
        Err(error) => unusable(format!(
            "directory {} is not accessible: {error}",
            directory.display()
        )),
        Ok(meta) if !meta.is_dir() => {
            unusable(format!("{} is not a directory", directory.display()))
        }
        Ok(meta) if meta.permissions().readonly() => {
            unusable(format!("directory {} is read-only", directory.display()))
        }
        Ok(_) => Ok(()),
    }
}

/// Creates a missing database file readable and writable by its owner only (prompts, results
/// and transcripts are private). SQLite gives the `-wal` and `-shm` files it creates next to it
/// the same permissions. An existing file keeps the permissions its owner chose.
fn create_owner_only(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "open",
            format!("cannot create SQLite database {}: {error}", path.display()),
        )
        .with_source(error)),
    }
}

#[async_trait]
impl DurableStore for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::none()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()> {
        self.write("register_owner", Commit::Deferred, move |c| {
            sql::register_owner(c, &owner)
        })
        .await
    }

    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>> {
        let owner_id = owner_id.to_owned();
        self.read("get_owner", move |c| sql::get_owner(c, &owner_id))
            .await
    }

    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()> {
        let (hash, source, now) = (hash.to_owned(), source.to_owned(), self.clock.now_ms());
        self.write("put_script", Commit::Fast, move |c| {
            sql::put_script(c, &hash, &source, now)
        })
        .await
    }

    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>> {
        let hash = hash.to_owned();
        self.read("get_script", move |c| sql::get_script(c, &hash))
            .await
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<CreatedRun> {
        self.write("create_run", Commit::Durable, move |c| {
            sql::create_run(c, &run)
        })
        .await
    }

    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord> {
        self.write("create_child_run", Commit::Fast, move |c| {
            sql::create_child_run(c, &child)
        })
        .await
    }

    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()> {
        let run_id = run_id.to_owned();
        self.write("finish_child_run", Commit::Fast, move |c| {
            sql::finish_child_run(c, &run_id, &outcome, now)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        let run_id = run_id.to_owned();
        self.read("get_run", move |c| sql::get_run(c, &run_id))
            .await
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        let task_id = task_id.to_owned();
        self.read("get_task", move |c| sql::get_task(c, &task_id))
            .await
    }

    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart> {
        self.write("start_attempt", Commit::Fast, move |c| {
            sql::start_attempt(c, &start)
        })
        .await
    }

    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()> {
        self.write("finish_attempt", Commit::Durable, move |c| {
            sql::finish_attempt(c, &finish)
        })
        .await
    }

    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>> {
        self.write("claim_next_task", Commit::Fast, move |c| {
            sql::claim_next_task(c, &claim)
        })
        .await
    }

    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>> {
        let run_id = run_id.to_owned();
        self.read("load_steps", move |c| sql::load_steps(c, &run_id))
            .await
    }

    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>> {
        let (run_id, checkpoint) = (run_id.to_owned(), checkpoint_name.to_owned());
        self.read("get_step", move |c| sql::get_step(c, &run_id, &checkpoint))
            .await
    }

    async fn insert_step(&self, step: NewStep) -> StoreResult<InsertStep> {
        // A claim is advisory while the attempt's lease is held: no fsync.
        self.write("insert_step", Commit::Fast, move |c| {
            sql::insert_step(c, &step)
        })
        .await
    }

    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas> {
        self.write("claim_step", Commit::Fast, move |c| {
            sql::claim_step(c, &claim)
        })
        .await
    }

    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas> {
        // A completion is what must never be lost: it is the paid-for result.
        self.write("complete_step", Commit::Durable, move |c| {
            sql::complete_step(c, &complete)
        })
        .await
    }

    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        // A completion, claim and all: durable. Copied once, for the writer thread, which
        // answers with the row built from that copy.
        let record = record.clone();
        self.write("record_step", Commit::Durable, move |c| {
            sql::record_step(c, record)
        })
        .await
    }

    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas> {
        let commit = if fail.ledger.is_empty() {
            Commit::Fast
        } else {
            Commit::Durable
        };
        self.write("fail_step", commit, move |c| sql::fail_step(c, &fail))
            .await
    }

    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome> {
        self.write("renew_leases", Commit::Deferred, move |c| {
            sql::renew_leases(c, &renew)
        })
        .await
    }

    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        let root = root_run_id.to_owned();
        self.read("budget_spent", move |c| sql::budget_spent(c, &root))
            .await
    }

    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let root = root_run_id.to_owned();
        self.read("ledger_entries", move |c| sql::ledger_entries(c, &root))
            .await
    }

    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events.to_vec();
        self.write("append_events", Commit::Deferred, move |c| {
            sql::append_events(c, &rows)
        })
        .await
    }

    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest> {
        let run_id = run_id.to_owned();
        self.write("request_cancel", Commit::Durable, move |c| {
            sql::request_cancel(c, &run_id, now)
        })
        .await
    }

    async fn send_signal(&self, signal: NewSignal) -> StoreResult<SignalSend> {
        self.write("send_signal", Commit::Durable, move |c| {
            sql::send_signal(c, &signal)
        })
        .await
    }

    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>> {
        let (run_id, names) = (run_id.to_owned(), names.to_vec());
        self.read("pending_signals", move |c| {
            sql::pending_signals(c, &run_id, &names, limit)
        })
        .await
    }

    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume> {
        self.write("consume_signal", Commit::Durable, move |c| {
            sql::consume_signal(c, &consume)
        })
        .await
    }

    async fn reject_signal(&self, signal_id: &str, reason: Value, now: i64) -> StoreResult<bool> {
        let signal_id = signal_id.to_owned();
        self.write("reject_signal", Commit::Durable, move |c| {
            sql::reject_signal(c, &signal_id, &reason, now)
        })
        .await
    }

    async fn signal_sent(&self, run_id: &str) {
        let _ = run_id;
        self.changes.next().await;
    }
}

#[async_trait]
impl StoreAdmin for SqliteStore {
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let filter = filter.clone();
        self.read("list_runs", move |c| sql::list_runs(c, &filter))
            .await
    }

    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let task_id = task_id.to_owned();
        self.read("list_attempts", move |c| sql::list_attempts(c, &task_id))
            .await
    }

    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let run_id = run_id.to_owned();
        self.read("read_events", move |c| {
            sql::read_events(c, &run_id, after_seq, limit)
        })
        .await
    }

    async fn read_newest_events(
        &self,
        run_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let run_id = run_id.to_owned();
        self.read("read_newest_events", move |c| {
            sql::read_newest_events(c, &run_id, limit)
        })
        .await
    }

    async fn delete_task(&self, task_id: &str) -> StoreResult<bool> {
        let task_id = task_id.to_owned();
        self.write("delete_task", Commit::Durable, move |c| {
            sql::delete_task(c, &task_id)
        })
        .await
    }

    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>> {
        let run_id = run_id.to_owned();
        self.read("list_signals", move |c| sql::list_signals(c, &run_id))
            .await
    }

    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>> {
        let filter = filter.clone();
        self.read("list_open_waits", move |c| sql::list_open_waits(c, &filter))
            .await
    }
}

/// A blocking task that panicked or was cancelled: its error is kept as the source.
fn task_died(operation: &'static str, error: tokio::task::JoinError) -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        operation,
        format!("the blocking task died: {error}"),
    )
    .with_source(error)
}
