//! The store's operations as SQL on one connection. Writes run inside the writer's
//! transaction; reads on a reader connection. Every statement binds its values. The statements
//! are grouped by the table they are about: `tasks` (and attempts), `runs`, `steps`, `ledger`,
//! `events`, `owners` (and scripts), `signals`.

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

use rusqlite::{params, params_from_iter, Connection, Params, Row};
use serde_json::Value;
use smol_durable_core::decide::{
    admit_attempt, cancel_request, claim_verdict, counts_against_max_attempts, due_for_signals,
    takes_signals, wake_not_before, ClaimVerdict, Closure,
};
use smol_durable_core::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, FailStep, FinishAttempt, InsertStep, LedgerEntry,
    LedgerSource, NewChildRun, NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases, RenewOutcome,
    RunFilter, RunOutcome, RunRecord, StartAttempt, State, StepCas, StepRecord, TaskRecord,
};
use smol_durable_core::store::{
    ConsumeSignal, NewSignal, SignalConsume, SignalRecord, SignalSend, SignalState, WaitFilter,
};
use smol_durable_core::{StoreError, StoreErrorKind};

use crate::connection::map_error;
use crate::rows::{
    self, ATTEMPT_COLUMNS, EVENT_COLUMNS, LEDGER_COLUMNS, RUN_COLUMNS, SIGNAL_COLUMNS,
    STEP_COLUMNS, TASK_COLUMNS,
};

type Result<T> = std::result::Result<T, StoreError>;

pub(super) fn all<T, P: Params>(
    connection: &Connection,
    op: &'static str,
    sql: &str,
    params: P,
    parse: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(|e| map_error(op, e))?;
    let mut rows = statement.query(params).map_err(|e| map_error(op, e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| map_error(op, e))? {
        out.push(parse(row)?);
    }
    Ok(out)
}

pub(super) fn one<T, P: Params>(
    connection: &Connection,
    op: &'static str,
    sql: &str,
    params: P,
    parse: fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    Ok(all(connection, op, sql, params, parse)?.into_iter().next())
}

pub(super) fn execute<P: Params>(
    connection: &Connection,
    op: &'static str,
    sql: &str,
    params: P,
) -> Result<usize> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(|e| map_error(op, e))
}

pub(super) fn text(value: &Value) -> String {
    value.to_string()
}

pub(super) fn opt_text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
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
