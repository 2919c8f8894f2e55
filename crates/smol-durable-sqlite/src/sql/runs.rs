//! Runs and child runs: created, read, listed and deleted.

use super::*;

pub(crate) fn get_run(c: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM sw_workflow_runs WHERE run_id = ?1");
    one(c, "get_run", &sql, [run_id], rows::run)
}

pub(super) fn root_run_of_task(
    c: &Connection,
    op: &'static str,
    task_id: &str,
) -> Result<RunRecord> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sw_workflow_runs WHERE task_id = ?1 AND run_id = root_run_id \
         ORDER BY created_at LIMIT 1"
    );
    one(c, op, &sql, [task_id], rows::run)?
        .ok_or_else(|| not_found(op, "root run of task", task_id))
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
    for step in &new.steps {
        insert_step_row(c, op, step)?;
    }
    insert_ledger(c, op, &new.ledger)?;
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

pub(crate) fn delete_task(c: &Connection, task_id: &str) -> Result<bool> {
    let op = "delete_task";
    let Some(task) = get_task(c, task_id)? else {
        return Ok(false);
    };
    if !task.state.is_terminal() {
        return Err(smol_durable_core::store::unfinished_task(
            task_id,
            &task.state,
        ));
    }
    // Any run not terminal (`State::is_terminal`).
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
        return Err(smol_durable_core::store::unfinished_task(
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
        "sw_workflow_signals",
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
