//! Reading rows into records. A malformed value fails with a `Corrupt` error that names the
//! table, the row id and the column; unknown states and kinds pass through as `Unknown` so the
//! core can refuse them with its own message.

use rusqlite::types::FromSql;
use rusqlite::Row;
use serde_json::Value;
use smol_durable_core::store::{
    AttemptRecord, ClaimScope, EventRecord, LedgerEntry, OwnerRecord, RunRecord, SignalRecord,
    SignalState, State, StepKind, StepRecord, TaskRecord, WorkflowInfo,
};
use smol_durable_core::{StoreError, StoreErrorKind};

pub(crate) const TASK_COLUMNS: &str = "task_id, task_name, state, claim_scope, params_json, \
    submitted_by_owner_id, claimed_by_owner_id, lease_expires_at, max_attempts, idempotency_key, \
    not_before, completed_payload_json, failure_reason_json, created_at, updated_at";

pub(crate) const RUN_COLUMNS: &str =
    "run_id, task_id, root_run_id, parent_run_id, parent_step_id, \
    state, workflow_run_json, args_json, budget_total, budget_spent, completed_payload_json, \
    failure_reason_json, cancel_requested_at, created_at, updated_at";

pub(crate) const ATTEMPT_COLUMNS: &str = "attempt_id, run_id, task_id, attempt, worker_id, state, \
    lease_expires_at, started_at, completed_at, failure_reason_json";

pub(crate) const STEP_COLUMNS: &str = "step_id, run_id, root_run_id, step_kind, checkpoint_name, \
    input_signature_hash, input_signature_json, state, input_json, result_json, \
    failure_reason_json, worker_id, lease_expires_at, attempts, last_attempt_at, created_at, \
    updated_at";

pub(crate) const LEDGER_COLUMNS: &str = "budget_entry_id, run_id, root_run_id, step_id, \
    source_type, source_id, output_tokens, usage_json, created_at";

pub(crate) const SIGNAL_COLUMNS: &str = "signal_id, run_id, root_run_id, name, payload_json, \
    idempotency_key, state, step_id, reason_json, seq, created_at, updated_at";

pub(crate) const EVENT_COLUMNS: &str = "rowid, event_id, run_id, COALESCE(root_run_id, run_id), \
    attempt_id, step_id, event_type, payload_json, created_at";

/// Reads the columns of one row of `table`, naming the row (by its first column) in errors.
pub(crate) struct Reader<'r, 's> {
    row: &'r Row<'s>,
    table: &'static str,
    id: String,
    index: usize,
}

impl<'r, 's> Reader<'r, 's> {
    pub fn new(row: &'r Row<'s>, table: &'static str) -> Result<Self, StoreError> {
        let id = row
            .get::<_, String>(0)
            .map_err(|error| corrupt(table, "?", 0, row, &error.to_string()))?;
        Ok(Self {
            row,
            table,
            id,
            index: 0,
        })
    }

    fn column_name(&self, index: usize) -> String {
        self.row
            .as_ref()
            .column_name(index)
            .map(str::to_owned)
            .unwrap_or_else(|_| format!("#{index}"))
    }

    fn error(&self, index: usize, problem: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            "read",
            format!(
                "{} row {}: column {} {problem}",
                self.table,
                self.id,
                self.column_name(index)
            ),
        )
    }

    /// The next column as `T`.
    pub fn next<T: FromSql>(&mut self) -> Result<T, StoreError> {
        let index = self.index;
        self.index += 1;
        self.row
            .get::<_, T>(index)
            .map_err(|error| self.error(index, &format!("has an unexpected value: {error}")))
    }

    /// The next column as a non-negative integer.
    pub fn next_u64(&mut self) -> Result<u64, StoreError> {
        let index = self.index;
        let value: i64 = self.next()?;
        u64::try_from(value).map_err(|_| self.error(index, &format!("is negative ({value})")))
    }

    /// The next column as an optional non-negative integer.
    pub fn next_opt_u64(&mut self) -> Result<Option<u64>, StoreError> {
        let index = self.index;
        let value: Option<i64> = self.next()?;
        value
            .map(|v| u64::try_from(v).map_err(|_| self.error(index, &format!("is negative ({v})"))))
            .transpose()
    }

    /// The next column as a `u32` counter.
    pub fn next_u32(&mut self) -> Result<u32, StoreError> {
        let index = self.index;
        let value: i64 = self.next()?;
        u32::try_from(value).map_err(|_| self.error(index, &format!("is out of range ({value})")))
    }

    /// The next column as JSON text.
    pub fn next_json(&mut self) -> Result<Value, StoreError> {
        let index = self.index;
        let text: String = self.next()?;
        serde_json::from_str(&text)
            .map_err(|error| self.error(index, &format!("holds invalid JSON: {error}")))
    }

    /// The next column as optional JSON text.
    pub fn next_opt_json(&mut self) -> Result<Option<Value>, StoreError> {
        let index = self.index;
        let text: Option<String> = self.next()?;
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| self.error(index, &format!("holds invalid JSON: {error}")))
        })
        .transpose()
    }
}

fn corrupt(table: &str, id: &str, index: usize, row: &Row<'_>, problem: &str) -> StoreError {
    let column = row.as_ref().column_name(index).unwrap_or("?").to_owned();
    StoreError::new(
        StoreErrorKind::Corrupt,
        "read",
        format!("{table} row {id}: column {column} {problem}"),
    )
}

pub(crate) fn task(row: &Row<'_>) -> Result<TaskRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_tasks")?;
    Ok(TaskRecord {
        task_id: r.next()?,
        task_name: r.next()?,
        state: State::parse(&r.next::<String>()?),
        claim_scope: ClaimScope::parse(&r.next::<String>()?),
        params: r.next_json()?,
        submitted_by_owner_id: r.next()?,
        claimed_by_owner_id: r.next()?,
        lease_expires_at: r.next()?,
        max_attempts: r.next_u32()?,
        idempotency_key: r.next()?,
        not_before: r.next()?,
        completed_payload: r.next_opt_json()?,
        failure_reason: r.next_opt_json()?,
        created_at: r.next()?,
        updated_at: r.next()?,
    })
}

pub(crate) fn run(row: &Row<'_>) -> Result<RunRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_runs")?;
    let run_id: String = r.next()?;
    let task_id = r.next()?;
    let root_run_id = r.next()?;
    let parent_run_id = r.next()?;
    let parent_step_id = r.next()?;
    let state = State::parse(&r.next::<String>()?);
    let workflow_index = r.index;
    let workflow: WorkflowInfo = serde_json::from_value(r.next_json()?).map_err(|error| {
        r.error(
            workflow_index,
            &format!("is not a workflow description: {error}"),
        )
    })?;
    Ok(RunRecord {
        run_id,
        task_id,
        root_run_id,
        parent_run_id,
        parent_step_id,
        state,
        workflow,
        args: r.next_json()?,
        budget_total: r.next_opt_u64()?,
        budget_spent: r.next_u64()?,
        completed_payload: r.next_opt_json()?,
        failure_reason: r.next_opt_json()?,
        cancel_requested_at: r.next()?,
        created_at: r.next()?,
        updated_at: r.next()?,
    })
}

pub(crate) fn attempt(row: &Row<'_>) -> Result<AttemptRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_attempts")?;
    Ok(AttemptRecord {
        attempt_id: r.next()?,
        run_id: r.next()?,
        task_id: r.next()?,
        attempt: r.next_u32()?,
        worker_id: r.next()?,
        state: State::parse(&r.next::<String>()?),
        lease_expires_at: r.next()?,
        started_at: r.next()?,
        completed_at: r.next()?,
        failure_reason: r.next_opt_json()?,
    })
}

pub(crate) fn step(row: &Row<'_>) -> Result<StepRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_steps")?;
    Ok(StepRecord {
        step_id: r.next()?,
        run_id: r.next()?,
        root_run_id: r.next()?,
        kind: StepKind::parse(&r.next::<String>()?),
        checkpoint_name: r.next()?,
        input_signature_hash: r.next()?,
        input_signature_json: r.next()?,
        state: State::parse(&r.next::<String>()?),
        input: r.next_json()?,
        result: r.next_opt_json()?,
        failure_reason: r.next_opt_json()?,
        worker_id: r.next()?,
        lease_expires_at: r.next()?,
        fence: r.next_u32()?,
        last_attempt_at: r.next()?,
        created_at: r.next()?,
        updated_at: r.next()?,
    })
}

pub(crate) fn signal(row: &Row<'_>) -> Result<SignalRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_signals")?;
    Ok(SignalRecord {
        signal_id: r.next()?,
        run_id: r.next()?,
        root_run_id: r.next()?,
        name: r.next()?,
        payload: r.next_json()?,
        idempotency_key: r.next()?,
        state: SignalState::parse(&r.next::<String>()?),
        step_id: r.next()?,
        reason: r.next_opt_json()?,
        seq: r.next()?,
        created_at: r.next()?,
        updated_at: r.next()?,
    })
}

pub(crate) fn ledger(row: &Row<'_>) -> Result<LedgerEntry, StoreError> {
    let mut r = Reader::new(row, "sw_budget_ledger")?;
    Ok(LedgerEntry {
        budget_entry_id: r.next()?,
        run_id: r.next()?,
        root_run_id: r.next()?,
        step_id: r.next()?,
        source_type: smol_durable_core::store::LedgerSource::parse(&r.next::<String>()?),
        source_id: r.next()?,
        output_tokens: r.next_u64()?,
        usage: r
            .next_opt_json()?
            .map(|usage| smol_durable_core::Usage::from_stored(&usage)),
        created_at: r.next()?,
    })
}

pub(crate) fn event(row: &Row<'_>) -> Result<EventRecord, StoreError> {
    let seq: i64 = row
        .get(0)
        .map_err(|error| corrupt("sw_workflow_events", "?", 0, row, &error.to_string()))?;
    let id: String = row
        .get(1)
        .map_err(|error| corrupt("sw_workflow_events", "?", 1, row, &error.to_string()))?;
    let mut r = Reader {
        row,
        table: "sw_workflow_events",
        id,
        index: 1,
    };
    Ok(EventRecord {
        seq,
        event_id: r.next()?,
        run_id: r.next()?,
        root_run_id: r.next()?,
        attempt_id: r.next()?,
        step_id: r.next()?,
        event_type: r.next()?,
        payload: r.next_json()?,
        created_at: r.next()?,
    })
}

pub(crate) fn owner(row: &Row<'_>) -> Result<OwnerRecord, StoreError> {
    let mut r = Reader::new(row, "sw_workflow_owners")?;
    Ok(OwnerRecord {
        owner_id: r.next()?,
        pid: r
            .next::<Option<i64>>()?
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0),
        hostname: r.next::<Option<String>>()?.unwrap_or_default(),
        started_at: r.next()?,
        heartbeat_at: r.next()?,
    })
}
