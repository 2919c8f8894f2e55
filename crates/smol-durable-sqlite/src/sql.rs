//! The store's operations as SQL on one connection. Writes run inside the writer's
//! transaction; reads on a reader connection. Every statement binds its values.

use rusqlite::{params, params_from_iter, Connection, Params, Row};
use serde_json::Value;
use smol_durable::decide::{admit_attempt, cancel_request, claim_verdict, ClaimVerdict, Closure};
use smol_durable::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, FailStep, FinishAttempt, InsertStep, LedgerEntry,
    NewChildRun, NewEvent, NewRun, NewStep, OwnerRecord, RenewLeases, RenewOutcome, RunFilter,
    RunOutcome, RunRecord, StartAttempt, State, StepCas, StepRecord, TaskRecord,
};
use smol_durable::{StoreError, StoreErrorKind};

use crate::connection::map_error;
use crate::rows::{
    self, ATTEMPT_COLUMNS, EVENT_COLUMNS, LEDGER_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, TASK_COLUMNS,
};

type Result<T> = std::result::Result<T, StoreError>;

fn all<T, P: Params>(
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

fn one<T, P: Params>(
    connection: &Connection,
    op: &'static str,
    sql: &str,
    params: P,
    parse: fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    Ok(all(connection, op, sql, params, parse)?.into_iter().next())
}

fn execute<P: Params>(
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

fn text(value: &Value) -> String {
    value.to_string()
}

fn opt_text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn not_found(op: &'static str, what: &str, id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        op,
        format!("{what} {id} not found"),
    )
}

pub(crate) fn get_task(c: &Connection, task_id: &str) -> Result<Option<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM sw_workflow_tasks WHERE task_id = ?1");
    one(c, "get_task", &sql, [task_id], rows::task)
}

pub(crate) fn get_run(c: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM sw_workflow_runs WHERE run_id = ?1");
    one(c, "get_run", &sql, [run_id], rows::run)
}

fn root_run_of_task(c: &Connection, op: &'static str, task_id: &str) -> Result<RunRecord> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sw_workflow_runs WHERE task_id = ?1 AND run_id = root_run_id \
         ORDER BY created_at LIMIT 1"
    );
    one(c, op, &sql, [task_id], rows::run)?
        .ok_or_else(|| not_found(op, "root run of task", task_id))
}

pub(crate) fn get_step(
    c: &Connection,
    run_id: &str,
    checkpoint: &str,
) -> Result<Option<StepRecord>> {
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE run_id = ?1 AND checkpoint_name = ?2"
    );
    one(c, "get_step", &sql, [run_id, checkpoint], rows::step)
}

fn step_by_id(c: &Connection, op: &'static str, step_id: &str) -> Result<Option<StepRecord>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE step_id = ?1");
    one(c, op, &sql, [step_id], rows::step)
}

pub(crate) fn load_steps(c: &Connection, run_id: &str) -> Result<Vec<StepRecord>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE run_id = ?1 ORDER BY created_at, step_id");
    all(c, "load_steps", &sql, [run_id], rows::step)
}

pub(crate) fn list_attempts(c: &Connection, task_id: &str) -> Result<Vec<AttemptRecord>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM sw_workflow_attempts WHERE task_id = ?1 ORDER BY attempt"
    );
    all(c, "list_attempts", &sql, [task_id], rows::attempt)
}

pub(crate) fn list_runs(c: &Connection, filter: &RunFilter) -> Result<Vec<RunRecord>> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM sw_workflow_runs WHERE 1 = 1");
    let mut values: Vec<String> = Vec::new();
    if filter.roots_only {
        sql.push_str(" AND run_id = root_run_id");
    }
    if !filter.states.is_empty() {
        let marks: Vec<String> = filter
            .states
            .iter()
            .map(|state| {
                values.push(state.as_str().to_owned());
                format!("?{}", values.len())
            })
            .collect();
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
    }
    if let Some(task_id) = &filter.task_id {
        values.push(task_id.clone());
        sql.push_str(&format!(" AND task_id = ?{}", values.len()));
    }
    if let Some(name) = &filter.name_contains {
        values.push(name.clone());
        sql.push_str(&format!(
            " AND instr(lower(COALESCE(json_extract(workflow_run_json, '$.metadata.name'), '')), lower(?{})) > 0",
            values.len()
        ));
    }
    for (bound, op) in [(filter.created_from, ">="), (filter.created_until, "<=")] {
        if let Some(at) = bound {
            values.push(at.to_string());
            sql.push_str(&format!(
                " AND created_at {op} CAST(?{} AS INTEGER)",
                values.len()
            ));
        }
    }
    sql.push_str(" ORDER BY created_at DESC, run_id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
    }
    all(
        c,
        "list_runs",
        &sql,
        params_from_iter(values.iter()),
        rows::run,
    )
}

pub(crate) fn budget_spent(c: &Connection, root_run_id: &str) -> Result<u64> {
    let spent: i64 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(output_tokens), 0) FROM sw_budget_ledger WHERE root_run_id = ?1",
        )
        .and_then(|mut s| s.query_row([root_run_id], |row| row.get(0)))
        .map_err(|e| map_error("budget_spent", e))?;
    Ok(u64::try_from(spent).unwrap_or(0))
}

pub(crate) fn ledger_entries(c: &Connection, root_run_id: &str) -> Result<Vec<LedgerEntry>> {
    let sql = format!("SELECT {LEDGER_COLUMNS} FROM sw_budget_ledger WHERE root_run_id = ?1 ORDER BY created_at, budget_entry_id");
    all(c, "ledger_entries", &sql, [root_run_id], rows::ledger)
}

pub(crate) fn read_events(
    c: &Connection,
    run_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM sw_workflow_events \
         WHERE rowid > ?1 AND (run_id = ?2 OR root_run_id = ?2) ORDER BY rowid LIMIT ?3"
    );
    all(
        c,
        "read_events",
        &sql,
        params![after_seq, run_id, int(limit as u64)],
        rows::event,
    )
}

pub(crate) fn get_owner(c: &Connection, owner_id: &str) -> Result<Option<OwnerRecord>> {
    one(
        c,
        "get_owner",
        "SELECT owner_id, process_id, hostname, started_at, heartbeat_at FROM sw_workflow_owners WHERE owner_id = ?1",
        [owner_id],
        rows::owner,
    )
}

pub(crate) fn get_script(c: &Connection, hash: &str) -> Result<Option<String>> {
    fn source(row: &Row<'_>) -> Result<String> {
        row.get(0).map_err(|e| map_error("get_script", e))
    }
    one(
        c,
        "get_script",
        "SELECT source FROM sw_workflow_scripts WHERE script_hash = ?1",
        [hash],
        source,
    )
}

pub(crate) fn register_owner(c: &Connection, owner: &OwnerRecord) -> Result<()> {
    execute(
        c,
        "register_owner",
        "INSERT INTO sw_workflow_owners (owner_id, process_id, hostname, started_at, heartbeat_at, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'active') \
         ON CONFLICT (owner_id) DO UPDATE SET process_id = excluded.process_id, hostname = excluded.hostname, \
         heartbeat_at = excluded.heartbeat_at, state = 'active'",
        params![owner.owner_id, owner.pid, owner.hostname, owner.started_at, owner.heartbeat_at],
    )?;
    Ok(())
}

pub(crate) fn put_script(c: &Connection, hash: &str, source: &str, now: i64) -> Result<()> {
    execute(
        c,
        "put_script",
        "INSERT INTO sw_workflow_scripts (script_hash, source, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (script_hash) DO NOTHING",
        params![hash, source, now],
    )?;
    Ok(())
}

pub(crate) fn create_run(c: &Connection, new: &NewRun) -> Result<CreatedRun> {
    let op = "create_run";
    let scope = new.claim_scope.as_str();
    if let Some(key) = &new.idempotency_key {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM sw_workflow_tasks WHERE idempotency_scope = ?1 AND idempotency_key = ?2"
        );
        if let Some(task) = one(c, op, &sql, [scope, key.as_str()], rows::task)? {
            let run = root_run_of_task(c, op, &task.task_id)?;
            return Ok(CreatedRun {
                task,
                run,
                created: false,
            });
        }
    }
    let workflow = serde_json::to_value(&new.workflow).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Other,
            op,
            format!("cannot encode the workflow description: {error}"),
        )
    })?;
    execute(
        c,
        op,
        "INSERT INTO sw_workflow_tasks (task_id, task_name, state, params_json, submitted_by_owner_id, \
         claim_scope, idempotency_scope, idempotency_key, created_at, updated_at, max_attempts) \
         VALUES (?1, 'workflow.run', 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        params![
            new.task_id,
            text(&new.params),
            new.owner_id,
            scope,
            new.idempotency_key.as_ref().map(|_| scope),
            new.idempotency_key,
            new.now,
            new.max_attempts.max(1),
        ],
    )?;
    execute(
        c,
        op,
        "INSERT INTO sw_workflow_runs (run_id, task_id, root_run_id, state, workflow_run_json, args_json, \
         budget_total, budget_spent, created_at, updated_at) \
         VALUES (?1, ?2, ?1, 'pending', ?3, ?4, ?5, 0, ?6, ?6)",
        params![
            new.run_id,
            new.task_id,
            text(&workflow),
            text(&new.args),
            new.budget_total.map(int),
            new.now,
        ],
    )?;
    let task = get_task(c, &new.task_id)?.ok_or_else(|| not_found(op, "task", &new.task_id))?;
    let run = get_run(c, &new.run_id)?.ok_or_else(|| not_found(op, "run", &new.run_id))?;
    Ok(CreatedRun {
        task,
        run,
        created: true,
    })
}

pub(crate) fn create_child_run(c: &Connection, child: &NewChildRun) -> Result<RunRecord> {
    let op = "create_child_run";
    let workflow = serde_json::to_value(&child.workflow).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Other,
            op,
            format!("cannot encode the workflow description: {error}"),
        )
    })?;
    let inserted = execute(
        c,
        op,
        "INSERT INTO sw_workflow_runs (run_id, task_id, root_run_id, parent_run_id, parent_step_id, state, \
         workflow_run_json, args_json, budget_spent, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, 0, ?8, ?8) ON CONFLICT (run_id) DO NOTHING",
        params![
            child.run_id,
            child.task_id,
            child.root_run_id,
            child.parent_run_id,
            child.parent_step_id,
            text(&workflow),
            text(&child.args),
            child.now,
        ],
    )?;
    if inserted == 0 {
        execute(
            c,
            op,
            "UPDATE sw_workflow_runs SET state = 'running', failure_reason_json = NULL, updated_at = ?2 \
             WHERE run_id = ?1 AND state <> 'completed'",
            params![child.run_id, child.now],
        )?;
    }
    get_run(c, &child.run_id)?.ok_or_else(|| not_found(op, "run", &child.run_id))
}

pub(crate) fn finish_child_run(
    c: &Connection,
    run_id: &str,
    outcome: &RunOutcome,
    now: i64,
) -> Result<()> {
    let op = "finish_child_run";
    let (state, payload, reason) = match outcome {
        RunOutcome::Completed(value) => ("completed", Some(text(value)), None),
        RunOutcome::Failed(reason) => ("failed", None, Some(text(reason))),
        RunOutcome::Cancelled(reason) => ("cancelled", None, Some(text(reason))),
        _ => {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                op,
                "unknown run outcome",
            ))
        }
    };
    let changed = execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET state = ?2, completed_payload_json = ?3, failure_reason_json = ?4, \
         updated_at = ?5 WHERE run_id = ?1 AND state <> 'completed'",
        params![run_id, state, payload, reason, now],
    )?;
    if changed == 0 && get_run(c, run_id)?.is_none() {
        return Err(not_found(op, "run", run_id));
    }
    Ok(())
}

/// Who opens an attempt, and when.
struct Claimant<'a> {
    attempt_id: &'a str,
    owner: &'a str,
    lease: i64,
    now: i64,
    /// A resume: clears an earlier cancellation request (a plain claim never does).
    revive: bool,
}

/// Claims the task for the claimant and opens attempt max+1 (shared by start and claim-next).
fn open_attempt(
    c: &Connection,
    op: &'static str,
    task: &TaskRecord,
    run_id: &str,
    claimant: Claimant<'_>,
) -> Result<AttemptRecord> {
    let Claimant {
        attempt_id,
        owner,
        lease,
        now,
        revive,
    } = claimant;
    let abandoned = Closure::abandoned_attempt();
    execute(
        c,
        op,
        "UPDATE sw_workflow_attempts SET state = ?4, completed_at = ?2, lease_expires_at = NULL, \
         failure_reason_json = ?3 WHERE task_id = ?1 AND state = 'running'",
        params![
            task.task_id,
            now,
            text(&abandoned.reason),
            abandoned.state.as_str()
        ],
    )?;
    // Steps held by the previous holder (or an earlier attempt of this owner) can be reclaimed
    // at once: their holder is gone.
    execute(
        c,
        op,
        "UPDATE sw_workflow_steps SET lease_expires_at = ?2 \
         WHERE root_run_id = ?1 AND state = 'running' AND (worker_id = ?3 OR worker_id = ?4)",
        params![run_id, now, owner, task.claimed_by_owner_id],
    )?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_tasks SET state = 'running', claimed_by_owner_id = ?2, lease_expires_at = ?3, \
         not_before = NULL, updated_at = ?4, \
         submitted_by_owner_id = CASE WHEN claim_scope = 'local' THEN ?2 ELSE submitted_by_owner_id END \
         WHERE task_id = ?1",
        params![task.task_id, owner, lease, now],
    )?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET state = 'running', failure_reason_json = NULL, updated_at = ?2, \
         cancel_requested_at = CASE WHEN ?3 THEN NULL ELSE cancel_requested_at END WHERE run_id = ?1",
        params![run_id, now, revive],
    )?;
    let number: i64 = c
        .prepare_cached(
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM sw_workflow_attempts WHERE task_id = ?1",
        )
        .and_then(|mut s| s.query_row([&task.task_id], |row| row.get(0)))
        .map_err(|e| map_error(op, e))?;
    execute(
        c,
        op,
        "INSERT INTO sw_workflow_attempts (attempt_id, run_id, task_id, attempt, worker_id, state, \
         lease_expires_at, started_at) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7)",
        params![attempt_id, run_id, task.task_id, number, owner, lease, now],
    )?;
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM sw_workflow_attempts WHERE attempt_id = ?1");
    one(c, op, &sql, [attempt_id], rows::attempt)?
        .ok_or_else(|| not_found(op, "attempt", attempt_id))
}

pub(crate) fn start_attempt(c: &Connection, start: &StartAttempt) -> Result<AttemptStart> {
    let op = "start_attempt";
    let task = get_task(c, &start.task_id)?.ok_or_else(|| not_found(op, "task", &start.task_id))?;
    let refused = admit_attempt(
        &task,
        &start.owner_id,
        start.take_over_from.as_deref(),
        start.revive,
        start.now,
    );
    if let Some(refused) = refused {
        return Ok(refused);
    }
    let attempt = open_attempt(
        c,
        op,
        &task,
        &start.run_id,
        Claimant {
            attempt_id: &start.attempt_id,
            owner: &start.owner_id,
            lease: start.lease_expires_at,
            now: start.now,
            revive: start.revive,
        },
    )?;
    Ok(AttemptStart::Started(attempt))
}

pub(crate) fn finish_attempt(c: &Connection, finish: &FinishAttempt) -> Result<()> {
    let op = "finish_attempt";
    let task =
        get_task(c, &finish.task_id)?.ok_or_else(|| not_found(op, "task", &finish.task_id))?;
    if task.claimed_by_owner_id.as_deref() != Some(finish.owner_id.as_str()) {
        return Err(StoreError::new(
            StoreErrorKind::LeaseLost,
            op,
            format!(
                "task {} is no longer claimed by {}",
                finish.task_id, finish.owner_id
            ),
        ));
    }
    let end = &finish.end;
    let (attempt_state, next_state) = (end.attempt.as_str(), end.run_and_task.as_str());
    let payload = opt_text(&end.payload);
    let reason = opt_text(&end.reason);
    let not_before = end.not_before;
    let closed = execute(
        c,
        op,
        "UPDATE sw_workflow_attempts SET state = ?2, completed_at = ?3, failure_reason_json = ?4, \
         lease_expires_at = NULL WHERE attempt_id = ?1 AND state = 'running'",
        params![finish.attempt_id, attempt_state, finish.now, reason],
    )?;
    if closed == 0 {
        return Err(StoreError::new(
            StoreErrorKind::LeaseLost,
            op,
            format!("attempt {} is not running", finish.attempt_id),
        ));
    }
    let spent = budget_spent(c, &finish.run_id)?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET state = ?2, completed_payload_json = ?3, failure_reason_json = ?4, \
         budget_spent = ?5, updated_at = ?6 WHERE run_id = ?1",
        params![finish.run_id, next_state, payload, reason, int(spent), finish.now],
    )?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_tasks SET state = ?2, completed_payload_json = ?3, failure_reason_json = ?4, \
         lease_expires_at = NULL, not_before = ?5, claimed_by_owner_id = NULL, updated_at = ?6 WHERE task_id = ?1",
        params![finish.task_id, next_state, payload, reason, not_before, finish.now],
    )?;
    // Child runs cannot outlive the attempt that ran them.
    execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET state = ?2, failure_reason_json = ?3, updated_at = ?4 \
         WHERE root_run_id = ?1 AND run_id <> root_run_id AND state IN ('pending', 'running')",
        params![
            finish.run_id,
            end.unfinished_children.state.as_str(),
            text(&end.unfinished_children.reason),
            finish.now
        ],
    )?;
    Ok(())
}

pub(crate) fn claim_next_task(
    c: &Connection,
    claim: &ClaimNextTask,
) -> Result<Option<ClaimedTask>> {
    let op = "claim_next_task";
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM sw_workflow_tasks WHERE claim_scope = ?1 AND ( \
           (state = 'pending' AND (not_before IS NULL OR not_before <= ?2)) \
           OR (state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?2))) \
         ORDER BY created_at, task_id LIMIT 1"
    );
    loop {
        let Some(task) = one(
            c,
            op,
            &sql,
            params![claim.scope.as_str(), claim.now],
            rows::task,
        )?
        else {
            return Ok(None);
        };
        let run = root_run_of_task(c, op, &task.task_id)?;
        let attempts: i64 = c
            // The attempts that count: decide::counts_against_max_attempts.
            .prepare_cached(
                "SELECT COUNT(*) FROM sw_workflow_attempts WHERE task_id = ?1 \
                 AND state IN ('failed', 'running')",
            )
            .and_then(|mut s| s.query_row([&task.task_id], |row| row.get(0)))
            .map_err(|e| map_error(op, e))?;
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        let verdict = claim_verdict(
            run.cancel_requested_at.is_some(),
            attempts,
            task.max_attempts,
        );
        if let ClaimVerdict::Close(closure) = verdict {
            close_task(c, op, &task.task_id, &closure, claim.now)?;
            continue;
        }
        let attempt = open_attempt(
            c,
            op,
            &task,
            &run.run_id,
            Claimant {
                attempt_id: &claim.attempt_id,
                owner: &claim.owner_id,
                lease: claim.lease_expires_at,
                now: claim.now,
                revive: false,
            },
        )?;
        let task =
            get_task(c, &task.task_id)?.ok_or_else(|| not_found(op, "task", &task.task_id))?;
        let run = get_run(c, &run.run_id)?.ok_or_else(|| not_found(op, "run", &run.run_id))?;
        return Ok(Some(ClaimedTask {
            task,
            run,
            attempt,
            failed_attempts: attempts,
        }));
    }
}

/// Ends a task nobody will finish (cancelled while unattended, out of attempts): the task, its
/// running attempts and its unfinished runs (root and children) take `state`.
fn close_task(
    c: &Connection,
    op: &'static str,
    task_id: &str,
    closure: &Closure,
    now: i64,
) -> Result<()> {
    let (state, reason) = (closure.state.as_str(), text(&closure.reason));
    execute(
        c,
        op,
        "UPDATE sw_workflow_tasks SET state = ?2, failure_reason_json = ?3, claimed_by_owner_id = NULL, \
         lease_expires_at = NULL, updated_at = ?4 WHERE task_id = ?1",
        params![task_id, state, reason, now],
    )?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_attempts SET state = ?2, failure_reason_json = ?3, completed_at = ?4, \
         lease_expires_at = NULL WHERE task_id = ?1 AND state = 'running'",
        params![task_id, state, reason, now],
    )?;
    execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET state = ?2, failure_reason_json = ?3, updated_at = ?4 \
         WHERE task_id = ?1 AND state IN ('pending', 'running')",
        params![task_id, state, reason, now],
    )?;
    Ok(())
}

pub(crate) fn insert_step(c: &Connection, new: &NewStep) -> Result<InsertStep> {
    let op = "insert_step";
    // RETURNING gives the new row in the same statement; nothing comes back on conflict.
    let sql = format!(
        "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, \
         input_signature_hash, input_signature_json, state, input_json, worker_id, lease_expires_at, \
         attempts, last_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9, ?10, 1, ?11, ?11, ?11) \
         ON CONFLICT (run_id, checkpoint_name) DO NOTHING RETURNING {STEP_COLUMNS}"
    );
    let inserted = one(
        c,
        op,
        &sql,
        params![
            new.step_id,
            new.run_id,
            new.root_run_id,
            new.kind.as_str(),
            new.checkpoint_name,
            new.input_signature_hash,
            new.input_signature_json,
            text(&new.input),
            new.worker_id,
            new.lease_expires_at,
            new.now,
        ],
        rows::step,
    )?;
    if let Some(row) = inserted {
        return Ok(InsertStep::Inserted(row));
    }
    let row = get_step(c, &new.run_id, &new.checkpoint_name)?
        .ok_or_else(|| not_found(op, "step", &new.checkpoint_name))?;
    Ok(InsertStep::Existing(row))
}

/// The outcome of a compare-and-set `UPDATE … RETURNING`: the updated row, or the current one.
fn cas_outcome(
    c: &Connection,
    op: &'static str,
    step_id: &str,
    updated: Option<StepRecord>,
) -> Result<StepCas> {
    match updated {
        Some(row) => Ok(StepCas::Applied(row)),
        None => Ok(StepCas::Conflict(step_by_id(c, op, step_id)?)),
    }
}

pub(crate) fn claim_step(c: &Connection, claim: &ClaimStep) -> Result<StepCas> {
    let op = "claim_step";
    let sql = format!(
        "UPDATE sw_workflow_steps SET state = 'running', attempts = attempts + 1, worker_id = ?4, \
         lease_expires_at = ?5, last_attempt_at = ?6, updated_at = ?6, failure_reason_json = NULL \
         WHERE step_id = ?1 AND state = ?2 AND attempts = ?3 RETURNING {STEP_COLUMNS}"
    );
    let updated = one(
        c,
        op,
        &sql,
        params![
            claim.step_id,
            claim.expected_state.as_str(),
            claim.expected_fence,
            claim.worker_id,
            claim.lease_expires_at,
            claim.now
        ],
        rows::step,
    )?;
    cas_outcome(c, op, &claim.step_id, updated)
}

fn insert_ledger(c: &Connection, op: &'static str, entries: &[LedgerEntry]) -> Result<()> {
    for entry in entries {
        execute(
            c,
            op,
            "INSERT INTO sw_budget_ledger (budget_entry_id, run_id, root_run_id, step_id, source_type, \
             source_id, output_tokens, usage_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (root_run_id, source_type, source_id) DO NOTHING",
            params![
                entry.budget_entry_id,
                entry.run_id,
                entry.root_run_id,
                entry.step_id,
                entry.source_type,
                entry.source_id,
                int(entry.output_tokens),
                opt_text(&entry.usage),
                entry.created_at,
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn complete_step(c: &Connection, complete: &CompleteStep) -> Result<StepCas> {
    let op = "complete_step";
    let sql = format!(
        "UPDATE sw_workflow_steps SET state = 'completed', result_json = ?2, lease_expires_at = NULL, \
         updated_at = ?3 WHERE step_id = ?1 AND state = 'running' AND attempts = ?4 \
         RETURNING {STEP_COLUMNS}"
    );
    let updated = one(
        c,
        op,
        &sql,
        params![
            complete.step_id,
            text(&complete.result),
            complete.now,
            complete.fence
        ],
        rows::step,
    )?;
    if updated.is_some() {
        insert_ledger(c, op, &complete.ledger)?;
    }
    cas_outcome(c, op, &complete.step_id, updated)
}

pub(crate) fn fail_step(c: &Connection, fail: &FailStep) -> Result<StepCas> {
    let op = "fail_step";
    let sql = format!(
        "UPDATE sw_workflow_steps SET state = ?2, failure_reason_json = ?3, lease_expires_at = NULL, \
         updated_at = ?4 WHERE step_id = ?1 AND state = 'running' AND attempts = ?5 RETURNING {STEP_COLUMNS}"
    );
    let updated = one(
        c,
        op,
        &sql,
        params![
            fail.step_id,
            fail.state.as_str(),
            text(&fail.reason),
            fail.now,
            fail.fence
        ],
        rows::step,
    )?;
    if updated.is_some() {
        insert_ledger(c, op, &fail.ledger)?;
    }
    cas_outcome(c, op, &fail.step_id, updated)
}

pub(crate) fn renew_leases(c: &Connection, renew: &RenewLeases) -> Result<RenewOutcome> {
    let op = "renew_leases";
    execute(
        c,
        op,
        "UPDATE sw_workflow_owners SET heartbeat_at = ?2 WHERE owner_id = ?1",
        params![renew.owner_id, renew.now],
    )?;
    let held = execute(
        c,
        op,
        "UPDATE sw_workflow_tasks SET lease_expires_at = ?3 \
         WHERE task_id = ?1 AND state = 'running' AND claimed_by_owner_id = ?2",
        params![renew.task_id, renew.owner_id, renew.lease_expires_at],
    )?;
    if held == 1 {
        execute(
            c,
            op,
            "UPDATE sw_workflow_attempts SET lease_expires_at = ?2 WHERE attempt_id = ?1",
            params![renew.attempt_id, renew.lease_expires_at],
        )?;
    } else if get_task(c, &renew.task_id)?.is_none() {
        return Err(not_found(op, "task", &renew.task_id));
    }
    let mut lost_steps = Vec::new();
    for lease in &renew.steps {
        // A deposed owner renews nothing: its successor expired those leases on purpose.
        let renewed = held == 1
            && execute(
                c,
                op,
                "UPDATE sw_workflow_steps SET lease_expires_at = ?3 \
                 WHERE step_id = ?1 AND state = 'running' AND attempts = ?2",
                params![lease.step_id, lease.fence, lease.lease_expires_at],
            )? == 1;
        if !renewed {
            lost_steps.push(lease.step_id.clone());
        }
    }
    let cancel_requested: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sw_workflow_runs WHERE run_id = ?1 AND cancel_requested_at IS NOT NULL)")
        .and_then(|mut s| s.query_row([&renew.run_id], |row| row.get(0)))
        .map_err(|e| map_error(op, e))?;
    Ok(RenewOutcome {
        task_held: held == 1,
        lost_steps,
        cancel_requested,
    })
}

pub(crate) fn append_events(c: &Connection, events: &[NewEvent]) -> Result<()> {
    for event in events {
        execute(
            c,
            "append_events",
            "INSERT INTO sw_workflow_events (event_id, run_id, root_run_id, attempt_id, step_id, event_type, \
             payload_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (event_id) DO NOTHING",
            params![
                event.event_id,
                event.run_id,
                event.root_run_id,
                event.attempt_id,
                event.step_id,
                event.event_type,
                text(&event.payload),
                event.created_at,
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn request_cancel(c: &Connection, run_id: &str, now: i64) -> Result<CancelRequest> {
    let op = "request_cancel";
    let Some(run) = get_run(c, run_id)? else {
        return Ok(CancelRequest::NotFound);
    };
    let task = get_task(c, &run.task_id)?.ok_or_else(|| not_found(op, "task", &run.task_id))?;
    let outcome = cancel_request(&task, now);
    if let CancelRequest::AlreadyFinished(_) = outcome {
        return Ok(outcome);
    }
    execute(
        c,
        op,
        "UPDATE sw_workflow_runs SET cancel_requested_at = ?2, updated_at = ?2 WHERE run_id = ?1",
        params![run.root_run_id, now],
    )?;
    if outcome == CancelRequest::CancelledPending {
        close_task(c, op, &task.task_id, &Closure::cancelled(), now)?;
    }
    Ok(outcome)
}

pub(crate) fn delete_task(c: &Connection, task_id: &str) -> Result<bool> {
    let op = "delete_task";
    let Some(task) = get_task(c, task_id)? else {
        return Ok(false);
    };
    if !task.state.is_terminal() {
        return Err(smol_durable::store::unfinished_task(task_id, &task.state));
    }
    let unfinished: Option<String> = c
        .prepare_cached(
            "SELECT state FROM sw_workflow_runs WHERE task_id = ?1 \
             AND state NOT IN ('completed', 'failed', 'cancelled') LIMIT 1",
        )
        .and_then(|mut statement| {
            let mut rows = statement.query(params![task_id])?;
            rows.next()?.map(|row| row.get(0)).transpose()
        })
        .map_err(|e| map_error(op, e))?;
    if let Some(state) = unfinished {
        return Err(smol_durable::store::unfinished_task(
            task_id,
            &State::parse(&state),
        ));
    }
    // Children first within each table's rows is not needed: foreign keys are checked at the
    // end of each statement, and every row that points at a deleted row goes in the same one.
    const RUNS: &str = "SELECT run_id FROM sw_workflow_runs WHERE task_id = ?1";
    for table in [
        "sw_workflow_events",
        "sw_budget_ledger",
        "sw_workflow_steps",
    ] {
        execute(
            c,
            op,
            &format!("DELETE FROM {table} WHERE run_id IN ({RUNS})"),
            params![task_id],
        )?;
    }
    execute(
        c,
        op,
        "DELETE FROM sw_workflow_attempts WHERE task_id = ?1",
        params![task_id],
    )?;
    execute(
        c,
        op,
        "DELETE FROM sw_workflow_runs WHERE task_id = ?1",
        params![task_id],
    )?;
    execute(
        c,
        op,
        "DELETE FROM sw_workflow_tasks WHERE task_id = ?1",
        params![task_id],
    )?;
    Ok(true)
}
