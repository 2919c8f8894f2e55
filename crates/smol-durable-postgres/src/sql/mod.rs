//! The store's operations as SQL on one connection (a pooled one, or a transaction's). Every
//! statement binds its values; the only text spliced into SQL is the validated schema name.
//!
//! The statements are grouped by the table they are about: `tasks` (and attempts), `runs`,
//! `steps`, `ledger`, `events`, `owners` (and scripts), `signals`.
//!
//! Hot-path writes are single statements, so each is one round trip and one transaction.
//! Claims, events and heartbeats turn `synchronous_commit` off for their own transaction (a
//! `set_config(…, true)` in a CTE): losing one in a server crash only means the step is claimed
//! again, and WAL order means a durable completion always carries the claims before it.

mod events;
mod ledger;
mod owners;
mod runs;
mod signals;
mod steps;
mod tasks;

pub(crate) use events::*;
pub(crate) use ledger::*;
pub(crate) use owners::*;
pub(crate) use runs::*;
pub(crate) use signals::*;
pub(crate) use steps::*;
pub(crate) use tasks::*;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use smol_durable_core::decide::{
    admit_attempt, cancel_request, claim_verdict, due_for_signals, takes_signals, wake_not_before,
    ClaimVerdict, Closure,
};
use smol_durable_core::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimScope, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, FailStep, FinishAttempt, InsertStep, LedgerEntry,
    LedgerSource, NewChildRun, NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases, RenewOutcome,
    RunFilter, RunOutcome, RunRecord, RunStart, StartAttempt, State, StepCas, StepRecord,
    TaskRecord,
};
use smol_durable_core::store::{
    ConsumeSignal, NewSignal, SignalConsume, SignalRecord, SignalSend, SignalState, WaitFilter,
};
use smol_durable_core::{StoreError, StoreErrorKind};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};

use crate::rows::{
    self, attempt_columns, event_columns, ledger_columns, owner_columns, run_columns,
    run_columns_r, signal_columns, step_columns, task_columns, task_columns_t,
};

type Result<T> = std::result::Result<T, StoreError>;
type PgQuery = Query<'static, Postgres, PgArguments>;

/// SQL text with every `sw_` table qualified by the store's schema, built once per statement.
#[derive(Debug)]
pub(crate) struct Sql {
    schema: String,
    notify_channel: String,
    cache: RwLock<HashMap<&'static str, Arc<str>>>,
}

impl Sql {
    /// `schema` must already be a validated identifier.
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            notify_channel: notify_channel(schema),
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    pub(crate) fn notify_channel(&self) -> &str {
        &self.notify_channel
    }

    fn qualify(&self, text: &str) -> String {
        let prefix = format!("{}.sw_", self.schema);
        text.replace("sw_workflow_", &format!("{prefix}workflow_"))
            .replace("sw_budget_ledger", &format!("{prefix}budget_ledger"))
    }

    /// A query on a static statement.
    fn query(&self, text: &'static str) -> PgQuery {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(text).cloned());
        let sql = match cached {
            Some(sql) => sql,
            None => {
                let sql: Arc<str> = self.qualify(text).into();
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(text, Arc::clone(&sql));
                }
                sql
            }
        };
        sqlx::query(AssertSqlSafe(sql))
    }

    /// A query on a statement assembled at run time (only column lists and placeholders).
    fn dynamic(&self, text: &str) -> PgQuery {
        sqlx::query(AssertSqlSafe(self.qualify(text)))
    }
}

/// The LISTEN/NOTIFY channel of a schema (identifiers are at most 63 bytes).
pub(super) fn notify_channel(schema: &str) -> String {
    let mut channel = format!("smol_durable_{schema}");
    channel.truncate(63);
    channel
}

/// Maps a driver error raised by `operation` to a [`StoreError`] of the right kind: lost
/// connections, pool timeouts, serialization failures and deadlocks are retryable.
pub(crate) fn map_error(operation: &'static str, error: sqlx::Error) -> StoreError {
    let kind = error_kind(&error);
    let message = if is_nul_in_json(&error) {
        format!(
            "PostgreSQL cannot store the character U+0000 (NUL) in a JSONB document, and this \
             {operation} carries one: {error}"
        )
    } else {
        error.to_string()
    };
    StoreError::new(kind, operation, message).with_source(error)
}

/// `untranslatable_character`: JSONB refuses `\u0000`. Retrying cannot help.
pub(super) fn is_nul_in_json(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("22P05"))
}

/// The store error kind of a driver error.
pub(crate) fn error_kind(error: &sqlx::Error) -> StoreErrorKind {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreErrorKind::Unavailable,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreErrorKind::Corrupt,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("08") => StoreErrorKind::Unavailable,
            // serialization_failure, deadlock_detected, admin/crash shutdown, cannot connect now,
            // too many connections
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300") => {
                StoreErrorKind::Unavailable
            }
            Some(code) if code.starts_with("23") => StoreErrorKind::Conflict,
            Some("22P05") => StoreErrorKind::Unsupported,
            _ => StoreErrorKind::Other,
        },
        _ => StoreErrorKind::Other,
    }
}

pub(super) async fn all<T>(
    c: &mut PgConnection,
    op: &'static str,
    query: PgQuery,
    parse: fn(&PgRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = query
        .fetch_all(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    rows.iter().map(parse).collect()
}

pub(super) async fn one<T>(
    c: &mut PgConnection,
    op: &'static str,
    query: PgQuery,
    parse: fn(&PgRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = query
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    row.as_ref().map(parse).transpose()
}

pub(super) async fn execute(c: &mut PgConnection, op: &'static str, query: PgQuery) -> Result<u64> {
    Ok(query
        .execute(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?
        .rows_affected())
}

pub(super) async fn scalar<T>(c: &mut PgConnection, op: &'static str, query: PgQuery) -> Result<T>
where
    T: for<'a> sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
{
    let row = query
        .fetch_one(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    row.try_get::<T, _>(0).map_err(|e| map_error(op, e))
}

pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn not_found(op: &'static str, what: &str, id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        op,
        format!("{what} {id} not found"),
    )
}

pub(super) fn encode_workflow(
    op: &'static str,
    workflow: &smol_durable_core::store::WorkflowInfo,
) -> Result<Value> {
    serde_json::to_value(workflow).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Other,
            op,
            format!("cannot encode the workflow description: {error}"),
        )
    })
}

/// Turns `synchronous_commit` off for the current transaction (see the module docs).
pub(crate) async fn relax_commit(c: &mut PgConnection, sql: &Sql, op: &'static str) -> Result<()> {
    execute(
        c,
        op,
        sql.query("SELECT set_config('synchronous_commit', 'off', true)"),
    )
    .await?;
    Ok(())
}

/// Wakes idle workers of this schema when the surrounding transaction commits.
pub(super) async fn notify_work(c: &mut PgConnection, sql: &Sql, op: &'static str) -> Result<()> {
    execute(
        c,
        op,
        sql.query("SELECT pg_notify($1, 'work')")
            .bind(sql.notify_channel().to_owned()),
    )
    .await?;
    Ok(())
}
