//! The PostgreSQL [`DurableStore`] for smol-durable: many workers on many machines share one
//! database, and PostgreSQL is the only coordinator.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smol_durable_core::StoreError> {
//! use smol_durable_core::DurableStore;
//! use smol_durable_postgres::{PostgresOptions, PostgresStore};
//!
//! // Every process pointed at this URL (and schema) shares the same runs.
//! let store = PostgresStore::connect_with(
//!     PostgresOptions::new("postgres://app@127.0.0.1:5432/app").schema("smol_durable"),
//! )
//! .await?;
//! assert!(store.capabilities().notify);
//! # Ok(())
//! # }
//! ```
//!
//! - The logical schema of the SQLite store with native types (`BIGINT` epoch-millisecond
//!   times, `JSONB` documents) and the same uniqueness rules, in a schema of your choice
//!   (`public` by default). Migrations are versioned, idempotent and serialized by an advisory
//!   lock, so any number of processes may start at once.
//! - [`PostgresStore::from_pool`] shares a host application's `sqlx` pool.
//! - Step completions (with their ledger rows) are one statement and one durable commit — a
//!   quick agent call's claim included (`record_step`) — and the records that queue up behind
//!   each other share one transaction and one flush; claims, events and heartbeats commit
//!   without waiting for a WAL flush, and events of concurrent runs share statements (held up
//!   to 20 ms).
//! - A statement is one round trip: the store keeps its connections between operations instead
//!   of handing them back to the pool, whose test of every returned connection would be a
//!   second one (see `docs/scaling.md`).
//! - Workers claim runner tasks with `FOR UPDATE SKIP LOCKED`, and idle workers are woken by
//!   `LISTEN/NOTIFY` when work is submitted or released.
#![deny(missing_docs)]

mod connections;
mod events;
mod migrate;
mod records;
mod rows;
mod sql;
mod wake;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
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
use smol_durable_core::{Clock, DurableStore, StoreError, StoreErrorKind, SystemClock};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

pub use migrate::SCHEMA_VERSION;
use sql::{map_error, Sql};

/// How long a pooled connection may have sat idle and still be handed out without a ping.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How to connect: the URL, the schema holding the tables, and the pool size.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    url: String,
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl PostgresOptions {
    /// Options for a `postgres://` URL, schema `public`, at most 16 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "public".to_owned(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    /// The schema for the tables (created if missing): a lowercase SQL identifier.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Pool size.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long an operation waits for a connection (or for the server to answer a connect)
    /// before failing with a retryable `Unavailable` error.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// A [`DurableStore`] on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Sql>,
    description: String,
    wake: Arc<wake::Listener>,
    connections: Arc<connections::Connections>,
    events: Arc<events::EventWriter>,
    records: Arc<records::RecordWriter>,
}

impl PostgresStore {
    /// Connects to `url` (schema `public`) and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(PostgresOptions::new(url)).await
    }

    /// Connects with options and brings the schema up to date.
    pub async fn connect_with(options: PostgresOptions) -> StoreResult<Self> {
        let schema = validate_schema(&options.schema)?;
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Other,
                    "connect",
                    format!(
                        "invalid PostgreSQL URL {}: {error}",
                        redact_password(&options.url)
                    ),
                )
            })?
            // A client that stops mid-transaction (frozen, cut off) must not hold task rows, which
            // every SKIP LOCKED claim would pass by, for longer than a lease: the server ends it.
            .options([("idle_in_transaction_session_timeout", "30s")]);
        let url = redact_password(&options.url);
        let cannot_connect = |kind: StoreErrorKind, cause: &dyn std::fmt::Display| {
            StoreError::new(
                kind,
                "connect",
                format!("cannot connect to PostgreSQL at {url}: {cause}"),
            )
        };
        // One direct connection first: a pool only reports "timed out" when the server is
        // unreachable, while the connection's own error says why (refused, auth, no database).
        match tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
            Ok(Err(error)) => {
                let kind = sql::error_kind(&error);
                return Err(cannot_connect(kind, &error).with_source(error));
            }
            Err(_) => {
                return Err(cannot_connect(
                    StoreErrorKind::Unavailable,
                    &format!("no answer within {:?}", options.acquire_timeout),
                ))
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection it hands out: a second round trip for every
            // statement. A connection used within the last second is taken as alive (if it
            // died meanwhile, the statement fails as retryable and the pool drops it); one that
            // sat idle longer is pinged first, as sqlx would.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= TRUSTED_IDLE {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(|error| {
                let kind = sql::error_kind(&error);
                cannot_connect(kind, &error).with_source(error)
            })?;
        Self::open(pool, schema, redact_password(&options.url)).await
    }

    /// Uses a host application's pool (schema `public`) and brings the schema up to date.
    ///
    /// The pool is used as configured. Pools this crate creates also set
    /// `idle_in_transaction_session_timeout = 30s`, so a client frozen mid-transaction cannot
    /// hold a task's row past its lease; set it on yours too (for example with
    /// `PgConnectOptions::options`). They also ping a connection before handing it out only
    /// when it sat idle for a second or more, where sqlx by default pings every time: a second
    /// round trip for every statement (`PgPoolOptions::test_before_acquire`).
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        Self::from_pool_in_schema(pool, "public").await
    }

    /// Uses a host application's pool with the tables in `schema`.
    pub async fn from_pool_in_schema(pool: PgPool, schema: &str) -> StoreResult<Self> {
        let schema = validate_schema(schema)?;
        let options = pool.connect_options();
        let description = format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        Self::open(pool, schema, description).await
    }

    async fn open(pool: PgPool, schema: String, url: String) -> StoreResult<Self> {
        migrate::migrate(&pool, &schema, SystemClock.now_ms()).await?;
        let sql = Arc::new(Sql::new(&schema));
        let connections = connections::Connections::new(pool.clone());
        Ok(Self {
            description: format!("{url} (schema {schema})"),
            wake: Arc::new(wake::Listener::new(
                pool.clone(),
                sql.notify_channel().to_owned(),
            )),
            events: Arc::new(events::EventWriter::new(
                Arc::clone(&connections),
                Arc::clone(&sql),
            )),
            records: Arc::new(records::RecordWriter::new(
                Arc::clone(&connections),
                Arc::clone(&sql),
            )),
            connections,
            sql,
            pool,
        })
    }

    /// The pool (shared with clones of this store).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        self.sql.schema()
    }

    async fn connection(&self, op: &'static str) -> StoreResult<PoolConnection<Postgres>> {
        self.connections.take(op).await
    }

    /// Keeps a connection whose operation ended cleanly for the next one.
    fn keep(&self, connection: PoolConnection<Postgres>) {
        self.connections.keep(connection);
    }
}

async fn begin<'c>(
    connection: &'c mut PgConnection,
    op: &'static str,
) -> StoreResult<Transaction<'c, Postgres>> {
    connection.begin().await.map_err(|e| map_error(op, e))
}

async fn commit(tx: Transaction<'_, Postgres>, op: &'static str) -> StoreResult<()> {
    tx.commit().await.map_err(|e| map_error(op, e))
}

/// Lowercase identifiers only, so the name can be spliced into SQL unquoted.
fn validate_schema(schema: &str) -> StoreResult<String> {
    let valid = !schema.is_empty()
        && schema.len() <= 50
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(schema.to_owned())
    } else {
        Err(StoreError::new(
            StoreErrorKind::Other,
            "connect",
            format!(
                "invalid schema name {schema:?}: use 1–50 lowercase letters, digits and \
                 underscores, not starting with a digit"
            ),
        ))
    }
}

/// A connection URL without its password (`postgres://app@db/app`), for messages and for
/// commands printed where others may read them.
pub fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// One operation on a pooled connection.
macro_rules! read {
    ($self:ident, $op:literal, |$c:ident| $body:expr) => {{
        let mut connection = $self.connection($op).await?;
        let $c = &mut *connection;
        let out = $body.await;
        if out.is_ok() {
            $self.keep(connection);
        }
        out
    }};
}

/// One operation in its own transaction, on a task of its own: a caller that stops waiting
/// (a cancelled script, an aborted heartbeat) never leaves a transaction half done on a pooled
/// connection; it runs to its commit or rollback regardless. `$sql` names the statement
/// builder inside; the body may only capture owned values.
macro_rules! write {
    ($self:ident, $op:literal, |$c:ident, $sql:ident| $body:expr) => {{
        let store = $self.clone();
        detached($op, async move {
            let mut connection = store.connection($op).await?;
            let mut tx = begin(&mut connection, $op).await?;
            let $c = &mut *tx;
            let $sql = &*store.sql;
            let out = $body.await?;
            commit(tx, $op).await?;
            store.keep(connection);
            Ok(out)
        })
        .await
    }};
}

/// One statement that commits on its own, detached like `write!` but without a transaction
/// around it: `BEGIN` and `COMMIT` would be two more round trips for nothing.
macro_rules! statement {
    ($self:ident, $op:literal, |$c:ident, $sql:ident| $body:expr) => {{
        let store = $self.clone();
        detached($op, async move {
            let mut connection = store.connection($op).await?;
            let $c = &mut *connection;
            let $sql = &*store.sql;
            let out = $body.await;
            if out.is_ok() {
                store.keep(connection);
            }
            out
        })
        .await
    }};
}

/// Runs `operation` on a task of its own and waits for its outcome: the caller dropping this
/// future does not cut the operation short.
async fn detached<T: Send + 'static>(
    op: &'static str,
    operation: impl std::future::Future<Output = StoreResult<T>> + Send + 'static,
) -> StoreResult<T> {
    match tokio::spawn(operation).await {
        Ok(outcome) => outcome,
        Err(error) => Err(StoreError::new(
            StoreErrorKind::Other,
            op,
            format!("the operation's task failed: {error}"),
        )
        .with_source(error)),
    }
}

#[async_trait]
impl DurableStore for PostgresStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::none().with_notify(true)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn register_owner(&self, owner: OwnerRecord) -> StoreResult<()> {
        read!(self, "register_owner", |c| sql::register_owner(
            c, &self.sql, &owner
        ))
    }

    async fn get_owner(&self, owner_id: &str) -> StoreResult<Option<OwnerRecord>> {
        read!(self, "get_owner", |c| sql::get_owner(
            c, &self.sql, owner_id
        ))
    }

    async fn put_script(&self, hash: &str, source: &str) -> StoreResult<()> {
        let now = SystemClock.now_ms();
        read!(self, "put_script", |c| sql::put_script(
            c, &self.sql, hash, source, now
        ))
    }

    async fn get_script(&self, hash: &str) -> StoreResult<Option<String>> {
        read!(self, "get_script", |c| sql::get_script(c, &self.sql, hash))
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<CreatedRun> {
        if sql::creates_in_one_statement(&run) {
            return statement!(self, "create_run", |c, q| sql::create_run(c, q, &run));
        }
        write!(self, "create_run", |c, q| sql::create_run(c, q, &run))
    }

    async fn create_child_run(&self, child: NewChildRun) -> StoreResult<RunRecord> {
        write!(self, "create_child_run", |c, q| sql::create_child_run(
            c, q, &child
        ))
    }

    async fn finish_child_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> StoreResult<()> {
        let run_id = run_id.to_owned();
        write!(self, "finish_child_run", |c, q| sql::finish_child_run(
            c, q, &run_id, &outcome, now
        ))
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        read!(self, "get_run", |c| sql::get_run(c, &self.sql, run_id))
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        read!(self, "get_task", |c| sql::get_task(c, &self.sql, task_id))
    }

    async fn start_attempt(&self, start: StartAttempt) -> StoreResult<AttemptStart> {
        write!(self, "start_attempt", |c, q| sql::start_attempt(
            c, q, &start
        ))
    }

    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<()> {
        if sql::finishes_in_one_statement(&finish) {
            return statement!(self, "finish_attempt", |c, q| sql::close_attempt(
                c, q, &finish
            ));
        }
        write!(self, "finish_attempt", |c, q| sql::finish_attempt(
            c, q, &finish
        ))
    }

    async fn claim_next_task(&self, claim: ClaimNextTask) -> StoreResult<Option<ClaimedTask>> {
        let first = claim.clone();
        let settled = statement!(self, "claim_next_task", |c, q| {
            sql::claim_next_task_alone(c, q, &first)
        })?;
        if let Some(claimed) = settled {
            return Ok(claimed);
        }
        write!(self, "claim_next_task", |c, q| sql::claim_next_task(
            c, q, &claim
        ))
    }

    async fn load_run_start(&self, root_run_id: &str) -> StoreResult<RunStart> {
        read!(self, "load_run_start", |c| sql::load_run_start(
            c,
            &self.sql,
            root_run_id
        ))
    }

    async fn load_steps(&self, run_id: &str) -> StoreResult<Vec<StepRecord>> {
        read!(self, "load_steps", |c| sql::load_steps(
            c, &self.sql, run_id
        ))
    }

    async fn get_step(
        &self,
        run_id: &str,
        checkpoint_name: &str,
    ) -> StoreResult<Option<StepRecord>> {
        read!(self, "get_step", |c| sql::get_step(
            c,
            &self.sql,
            run_id,
            checkpoint_name
        ))
    }

    async fn insert_step(&self, step: NewStep) -> StoreResult<InsertStep> {
        read!(self, "insert_step", |c| sql::insert_step(
            c, &self.sql, &step
        ))
    }

    async fn claim_step(&self, claim: ClaimStep) -> StoreResult<StepCas> {
        read!(self, "claim_step", |c| sql::claim_step(
            c, &self.sql, &claim
        ))
    }

    async fn complete_step(&self, complete: CompleteStep) -> StoreResult<StepCas> {
        read!(self, "complete_step", |c| sql::complete_step(
            c, &self.sql, &complete
        ))
    }

    async fn record_step(&self, record: &RecordStep) -> StoreResult<StepCas> {
        // Group commit across this handle's runs (see `records`), on the writer's own copy.
        self.records.record(record.clone()).await
    }

    async fn fail_step(&self, fail: FailStep) -> StoreResult<StepCas> {
        read!(self, "fail_step", |c| sql::fail_step(c, &self.sql, &fail))
    }

    async fn renew_leases(&self, renew: RenewLeases) -> StoreResult<RenewOutcome> {
        write!(self, "renew_leases", |c, q| sql::renew_leases(c, q, &renew))
    }

    async fn budget_spent(&self, root_run_id: &str) -> StoreResult<u64> {
        read!(self, "budget_spent", |c| sql::budget_spent(
            c,
            &self.sql,
            root_run_id
        ))
    }

    async fn ledger_entries(&self, root_run_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        read!(self, "ledger_entries", |c| sql::ledger_entries(
            c,
            &self.sql,
            root_run_id
        ))
    }

    async fn append_events(&self, events: &[EventRow]) -> StoreResult<()> {
        self.events.append(events).await
    }

    async fn request_cancel(&self, run_id: &str, now: i64) -> StoreResult<CancelRequest> {
        let run_id = run_id.to_owned();
        write!(self, "request_cancel", |c, q| sql::request_cancel(
            c, q, &run_id, now
        ))
    }

    async fn send_signal(&self, signal: NewSignal) -> StoreResult<SignalSend> {
        write!(self, "send_signal", |c, q| sql::send_signal(c, q, &signal))
    }

    async fn pending_signals(
        &self,
        run_id: &str,
        names: &[String],
        limit: usize,
    ) -> StoreResult<Vec<SignalRecord>> {
        read!(self, "pending_signals", |c| sql::pending_signals(
            c, &self.sql, run_id, names, limit
        ))
    }

    async fn consume_signal(&self, consume: ConsumeSignal) -> StoreResult<SignalConsume> {
        write!(self, "consume_signal", |c, q| sql::consume_signal(
            c, q, &consume
        ))
    }

    async fn reject_signal(&self, signal_id: &str, reason: Value, now: i64) -> StoreResult<bool> {
        let signal_id = signal_id.to_owned();
        write!(self, "reject_signal", |c, q| sql::reject_signal(
            c, q, &signal_id, &reason, now
        ))
    }

    async fn signal_sent(&self, run_id: &str) {
        self.wake.signal(run_id).await;
    }

    async fn work_available(&self) {
        self.wake.work().await;
    }

    async fn step_finished(&self, step_id: &str) {
        let flag = async {
            let Ok(mut connection) = self.connection("step_finished").await else {
                return true;
            };
            // On error keep waiting: the caller's poll still bounds the wait.
            sql::watch_step(&mut connection, &self.sql, step_id)
                .await
                .unwrap_or(true)
        };
        self.wake.step(step_id, flag).await;
    }
}

#[async_trait]
impl StoreAdmin for PostgresStore {
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        read!(self, "list_runs", |c| sql::list_runs(c, &self.sql, filter))
    }

    async fn list_attempts(&self, task_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        read!(self, "list_attempts", |c| sql::list_attempts(
            c, &self.sql, task_id
        ))
    }

    async fn read_events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        read!(self, "read_events", |c| sql::read_events(
            c, &self.sql, run_id, after_seq, limit
        ))
    }

    async fn read_newest_events(
        &self,
        run_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        read!(self, "read_newest_events", |c| sql::read_newest_events(
            c, &self.sql, run_id, limit
        ))
    }

    async fn delete_task(&self, task_id: &str) -> StoreResult<bool> {
        let task_id = task_id.to_owned();
        write!(self, "delete_task", |c, q| sql::delete_task(c, q, &task_id))
    }

    async fn list_signals(&self, run_id: &str) -> StoreResult<Vec<SignalRecord>> {
        read!(self, "list_signals", |c| sql::list_signals(
            c, &self.sql, run_id
        ))
    }

    async fn list_open_waits(&self, filter: &WaitFilter) -> StoreResult<Vec<StepRecord>> {
        read!(self, "list_open_waits", |c| sql::list_open_waits(
            c, &self.sql, filter
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("smol_durable_1").is_ok());
        assert!(validate_schema("_x").is_ok());
        for bad in [
            "",
            "1abc",
            "Public",
            "a-b",
            "a;drop",
            "a b",
            &"x".repeat(51),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact_password("postgres://app:secret@db:5432/x"),
            "postgres://app@db:5432/x"
        );
        assert_eq!(redact_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact_password("postgres://u:p@ss@db/x"),
            "postgres://u@db/x",
            "the last @ ends the credentials"
        );
    }
}
