//! Reading rows into records. A value of the wrong type or range fails with a `Corrupt` error
//! naming the table, the row id and the column; unknown states and kinds pass through as
//! `Unknown` so the core refuses them with its own message.

use serde_json::Value;
use smol_durable_core::store::{
    AttemptRecord, ClaimScope, EventRecord, LedgerEntry, OwnerRecord, RunRecord, SignalRecord,
    SignalState, State, StepKind, StepRecord, TaskRecord, WorkflowInfo,
};
use smol_durable_core::{StoreError, StoreErrorKind};
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

/// The columns of `sw_workflow_tasks` rows that the reader below decodes.
macro_rules! task_columns {
    () => {
        "task_id, task_name, state, claim_scope, params_json, \
    submitted_by_owner_id, claimed_by_owner_id, lease_expires_at, max_attempts, idempotency_key, \
    not_before, completed_payload_json, failure_reason_json, created_at, updated_at"
    };
}
pub(crate) use task_columns;

/// The columns of `sw_workflow_runs` rows that the reader below decodes.
macro_rules! run_columns {
    () => {
        "run_id, task_id, root_run_id, parent_run_id, parent_step_id, \
    state, workflow_run_json, args_json, budget_total, budget_spent, completed_payload_json, \
    failure_reason_json, cancel_requested_at, created_at, updated_at"
    };
}
pub(crate) use run_columns;

/// [`task_columns`] of the table aliased `t`, named `t_<column>`, for a statement that returns
/// a task and a run in one row ([`task_prefixed`]).
macro_rules! task_columns_t {
    () => {
        "t.task_id AS t_task_id, t.task_name AS t_task_name, t.state AS t_state, \
    t.claim_scope AS t_claim_scope, t.params_json AS t_params_json, \
    t.submitted_by_owner_id AS t_submitted_by_owner_id, \
    t.claimed_by_owner_id AS t_claimed_by_owner_id, \
    t.lease_expires_at AS t_lease_expires_at, t.max_attempts AS t_max_attempts, \
    t.idempotency_key AS t_idempotency_key, t.not_before AS t_not_before, \
    t.completed_payload_json AS t_completed_payload_json, \
    t.failure_reason_json AS t_failure_reason_json, t.created_at AS t_created_at, \
    t.updated_at AS t_updated_at"
    };
}
pub(crate) use task_columns_t;

/// [`run_columns`] of the table aliased `r`, named `r_<column>` ([`run_prefixed`]).
macro_rules! run_columns_r {
    () => {
        "r.run_id AS r_run_id, r.task_id AS r_task_id, r.root_run_id AS r_root_run_id, \
    r.parent_run_id AS r_parent_run_id, r.parent_step_id AS r_parent_step_id, \
    r.state AS r_state, r.workflow_run_json AS r_workflow_run_json, \
    r.args_json AS r_args_json, r.budget_total AS r_budget_total, \
    r.budget_spent AS r_budget_spent, r.completed_payload_json AS r_completed_payload_json, \
    r.failure_reason_json AS r_failure_reason_json, \
    r.cancel_requested_at AS r_cancel_requested_at, r.created_at AS r_created_at, \
    r.updated_at AS r_updated_at"
    };
}
pub(crate) use run_columns_r;

/// The columns of `sw_workflow_attempts` rows that the reader below decodes.
macro_rules! attempt_columns {
    () => {
        "attempt_id, run_id, task_id, attempt, worker_id, state, \
    lease_expires_at, started_at, completed_at, failure_reason_json"
    };
}
pub(crate) use attempt_columns;

/// The columns of `sw_workflow_steps` rows that the reader below decodes.
macro_rules! step_columns {
    () => {
        "step_id, run_id, root_run_id, step_kind, checkpoint_name, \
    input_signature_hash, input_signature_json, state, input_json, result_json, \
    failure_reason_json, worker_id, lease_expires_at, attempts, last_attempt_at, created_at, \
    updated_at"
    };
}
pub(crate) use step_columns;

/// The columns of `sw_budget_ledger` rows that the reader below decodes.
macro_rules! ledger_columns {
    () => {
        "budget_entry_id, run_id, root_run_id, step_id, \
    source_type, source_id, output_tokens, usage_json, created_at"
    };
}
pub(crate) use ledger_columns;

/// The columns of `sw_workflow_events` rows that the reader below decodes.
macro_rules! event_columns {
    () => {
        "seq, event_id, run_id, root_run_id, attempt_id, step_id, \
    event_type, payload_json, created_at"
    };
}
pub(crate) use event_columns;

/// The columns of `sw_workflow_owners` rows that the reader below decodes.
macro_rules! signal_columns {
    () => {
        "signal_id, run_id, root_run_id, name, payload_json, idempotency_key, state, step_id, \
    reason_json, seq, created_at, updated_at"
    };
}
pub(crate) use signal_columns;

macro_rules! owner_columns {
    () => {
        "owner_id, process_id, hostname, started_at, heartbeat_at"
    };
}
pub(crate) use owner_columns;

/// Reads the named columns of one row of `table`, naming the row (by `id_column`) in errors.
struct Reader<'r> {
    row: &'r PgRow,
    table: &'static str,
    id: String,
    /// Put before every column name: a statement returning two tables' rows as one row names
    /// one table's columns with a prefix.
    prefix: &'static str,
}

impl<'r> Reader<'r> {
    fn new(row: &'r PgRow, table: &'static str, id_column: &str) -> Self {
        Self::prefixed(row, table, id_column, "")
    }

    fn prefixed(
        row: &'r PgRow,
        table: &'static str,
        id_column: &str,
        prefix: &'static str,
    ) -> Self {
        let mut reader = Self {
            row,
            table,
            id: String::new(),
            prefix,
        };
        reader.id = reader
            .get::<String>(id_column)
            .unwrap_or_else(|_| "?".to_owned());
        reader
    }

    fn error(&self, column: &str, problem: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            "read",
            format!("{} row {}: column {column} {problem}", self.table, self.id),
        )
    }

    fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: for<'a> Decode<'a, Postgres> + Type<Postgres>,
    {
        let fetched = if self.prefix.is_empty() {
            self.row.try_get::<T, _>(column)
        } else {
            self.row
                .try_get::<T, _>(format!("{}{column}", self.prefix).as_str())
        };
        fetched.map_err(|error| self.error(column, &format!("has an unexpected value: {error}")))
    }

    fn u64(&self, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.get(column)?;
        u64::try_from(value).map_err(|_| self.error(column, &format!("is negative ({value})")))
    }

    fn opt_u64(&self, column: &str) -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = self.get(column)?;
        value
            .map(|v| {
                u64::try_from(v).map_err(|_| self.error(column, &format!("is negative ({v})")))
            })
            .transpose()
    }

    fn u32(&self, column: &str) -> Result<u32, StoreError> {
        let value: i64 = self.get(column)?;
        u32::try_from(value).map_err(|_| self.error(column, &format!("is out of range ({value})")))
    }

    fn state(&self, column: &str) -> Result<State, StoreError> {
        Ok(State::parse(&self.get::<String>(column)?))
    }
}

pub(crate) fn task(row: &PgRow) -> Result<TaskRecord, StoreError> {
    task_prefixed(row, "")
}

/// A task whose columns are named `<prefix><column>`.
pub(crate) fn task_prefixed(row: &PgRow, prefix: &'static str) -> Result<TaskRecord, StoreError> {
    let r = Reader::prefixed(row, "sw_workflow_tasks", "task_id", prefix);
    Ok(TaskRecord {
        task_id: r.get("task_id")?,
        task_name: r.get("task_name")?,
        state: r.state("state")?,
        claim_scope: ClaimScope::parse(&r.get::<String>("claim_scope")?),
        params: r.get("params_json")?,
        submitted_by_owner_id: r.get("submitted_by_owner_id")?,
        claimed_by_owner_id: r.get("claimed_by_owner_id")?,
        lease_expires_at: r.get("lease_expires_at")?,
        max_attempts: r.u32("max_attempts")?,
        idempotency_key: r.get("idempotency_key")?,
        not_before: r.get("not_before")?,
        completed_payload: r.get("completed_payload_json")?,
        failure_reason: r.get("failure_reason_json")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub(crate) fn run(row: &PgRow) -> Result<RunRecord, StoreError> {
    run_prefixed(row, "")
}

/// A run whose columns are named `<prefix><column>`.
pub(crate) fn run_prefixed(row: &PgRow, prefix: &'static str) -> Result<RunRecord, StoreError> {
    let r = Reader::prefixed(row, "sw_workflow_runs", "run_id", prefix);
    let workflow: WorkflowInfo = serde_json::from_value(r.get::<Value>("workflow_run_json")?)
        .map_err(|error| {
            r.error(
                "workflow_run_json",
                &format!("is not a workflow description: {error}"),
            )
        })?;
    Ok(RunRecord {
        run_id: r.get("run_id")?,
        task_id: r.get("task_id")?,
        root_run_id: r.get("root_run_id")?,
        parent_run_id: r.get("parent_run_id")?,
        parent_step_id: r.get("parent_step_id")?,
        state: r.state("state")?,
        workflow,
        args: r.get("args_json")?,
        budget_total: r.opt_u64("budget_total")?,
        budget_spent: r.u64("budget_spent")?,
        completed_payload: r.get("completed_payload_json")?,
        failure_reason: r.get("failure_reason_json")?,
        cancel_requested_at: r.get("cancel_requested_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub(crate) fn attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    let r = Reader::new(row, "sw_workflow_attempts", "attempt_id");
    Ok(AttemptRecord {
        attempt_id: r.get("attempt_id")?,
        run_id: r.get("run_id")?,
        task_id: r.get("task_id")?,
        attempt: r.u32("attempt")?,
        worker_id: r.get("worker_id")?,
        state: r.state("state")?,
        lease_expires_at: r.get("lease_expires_at")?,
        started_at: r.get("started_at")?,
        completed_at: r.get("completed_at")?,
        failure_reason: r.get("failure_reason_json")?,
    })
}

pub(crate) fn step(row: &PgRow) -> Result<StepRecord, StoreError> {
    let r = Reader::new(row, "sw_workflow_steps", "step_id");
    Ok(StepRecord {
        step_id: r.get("step_id")?,
        run_id: r.get("run_id")?,
        root_run_id: r.get("root_run_id")?,
        kind: StepKind::parse(&r.get::<String>("step_kind")?),
        checkpoint_name: r.get("checkpoint_name")?,
        input_signature_hash: r.get("input_signature_hash")?,
        input_signature_json: r.get("input_signature_json")?,
        state: r.state("state")?,
        input: r.get("input_json")?,
        result: r.get("result_json")?,
        failure_reason: r.get("failure_reason_json")?,
        worker_id: r.get("worker_id")?,
        lease_expires_at: r.get("lease_expires_at")?,
        fence: r.u32("attempts")?,
        last_attempt_at: r.get("last_attempt_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub(crate) fn signal(row: &PgRow) -> Result<SignalRecord, StoreError> {
    let r = Reader::new(row, "sw_workflow_signals", "signal_id");
    Ok(SignalRecord {
        signal_id: r.get("signal_id")?,
        run_id: r.get("run_id")?,
        root_run_id: r.get("root_run_id")?,
        name: r.get("name")?,
        payload: r.get("payload_json")?,
        idempotency_key: r.get("idempotency_key")?,
        state: SignalState::parse(&r.get::<String>("state")?),
        step_id: r.get("step_id")?,
        reason: r.get("reason_json")?,
        seq: r.get("seq")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub(crate) fn ledger(row: &PgRow) -> Result<LedgerEntry, StoreError> {
    let r = Reader::new(row, "sw_budget_ledger", "budget_entry_id");
    Ok(LedgerEntry {
        budget_entry_id: r.get("budget_entry_id")?,
        run_id: r.get("run_id")?,
        root_run_id: r.get("root_run_id")?,
        step_id: r.get("step_id")?,
        source_type: smol_durable_core::store::LedgerSource::parse(
            &r.get::<String>("source_type")?,
        ),
        source_id: r.get("source_id")?,
        output_tokens: r.u64("output_tokens")?,
        usage: r
            .get::<Option<serde_json::Value>>("usage_json")?
            .map(|usage| smol_durable_core::Usage::from_stored(&usage)),
        created_at: r.get("created_at")?,
    })
}

pub(crate) fn event(row: &PgRow) -> Result<EventRecord, StoreError> {
    let r = Reader::new(row, "sw_workflow_events", "event_id");
    Ok(EventRecord {
        event_id: r.get("event_id")?,
        seq: r.get("seq")?,
        run_id: r.get("run_id")?,
        root_run_id: r.get("root_run_id")?,
        attempt_id: r.get("attempt_id")?,
        step_id: r.get("step_id")?,
        event_type: r.get("event_type")?,
        payload: r.get("payload_json")?,
        created_at: r.get("created_at")?,
    })
}

pub(crate) fn owner(row: &PgRow) -> Result<OwnerRecord, StoreError> {
    let r = Reader::new(row, "sw_workflow_owners", "owner_id");
    let pid: Option<i64> = r.get("process_id")?;
    Ok(OwnerRecord {
        owner_id: r.get("owner_id")?,
        pid: pid
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or_default(),
        hostname: r.get::<Option<String>>("hostname")?.unwrap_or_default(),
        started_at: r.get("started_at")?,
        heartbeat_at: r.get("heartbeat_at")?,
    })
}
