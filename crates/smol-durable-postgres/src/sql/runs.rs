//! Runs and child runs: created, read, listed and deleted.

use super::*;

pub(crate) async fn get_run(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Option<RunRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM sw_workflow_runs WHERE run_id = $1"
    );
    one(c, "get_run", sql.query(Q).bind(run_id), rows::run).await
}

pub(super) async fn root_run_of_task(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    task_id: &str,
) -> Result<RunRecord> {
    const Q: &str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM sw_workflow_runs WHERE task_id = $1 AND run_id = root_run_id \
         ORDER BY created_at LIMIT 1"
    );
    one(c, op, sql.query(Q).bind(task_id), rows::run)
        .await?
        .ok_or_else(|| not_found(op, "root run of task", task_id))
}

pub(crate) async fn list_runs(
    c: &mut PgConnection,
    sql: &Sql,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>> {
    let mut text = concat!(
        "SELECT ",
        run_columns!(),
        " FROM sw_workflow_runs WHERE TRUE"
    )
    .to_owned();
    // Each filter adds one condition with the next placeholder; values bind in the same order.
    let mut binds: Vec<Bind> = Vec::new();
    if filter.roots_only {
        text.push_str(" AND run_id = root_run_id");
    }
    if !filter.states.is_empty() {
        binds.push(Bind::Texts(
            filter
                .states
                .iter()
                .map(|state| state.as_str().to_owned())
                .collect(),
        ));
        text.push_str(&format!(" AND state = ANY(${})", binds.len()));
    }
    if let Some(task_id) = &filter.task_id {
        binds.push(Bind::Text(task_id.clone()));
        text.push_str(&format!(" AND task_id = ${}", binds.len()));
    }
    if let Some(name) = &filter.name_contains {
        binds.push(Bind::Text(name.clone()));
        text.push_str(&format!(
            " AND strpos(lower(COALESCE(workflow_run_json #>> '{{metadata,name}}', '')), lower(${})) > 0",
            binds.len()
        ));
    }
    for (bound, op) in [(filter.created_from, ">="), (filter.created_until, "<=")] {
        if let Some(at) = bound {
            binds.push(Bind::Int(at));
            text.push_str(&format!(" AND created_at {op} ${}", binds.len()));
        }
    }
    text.push_str(" ORDER BY created_at DESC, run_id DESC");
    if let Some(limit) = filter.limit {
        text.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
    }
    let query = binds
        .into_iter()
        .fold(sql.dynamic(&text), |query, bind| match bind {
            Bind::Text(value) => query.bind(value),
            Bind::Texts(values) => query.bind(values),
            Bind::Int(value) => query.bind(value),
        });
    all(c, "list_runs", query, rows::run).await
}

/// A value for a placeholder of a statement assembled at run time.
enum Bind {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
}

pub(super) async fn task_by_key(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    scope: &str,
    key: &str,
) -> Result<Option<CreatedRun>> {
    const Q: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM sw_workflow_tasks WHERE idempotency_scope = $1 AND idempotency_key = $2"
    );
    let Some(task) = one(c, op, sql.query(Q).bind(scope).bind(key), rows::task).await? else {
        return Ok(None);
    };
    let run = root_run_of_task(c, sql, op, &task.task_id).await?;
    Ok(Some(CreatedRun {
        task,
        run,
        created: false,
    }))
}

/// Whether `new` needs no transaction around it: a run that brings no steps or ledger rows of
/// its own (all but a fork's) is its task, its row and the wake-up, which [`create_run`] writes
/// in one statement (after a read of the idempotency key, when there is one).
pub(crate) fn creates_in_one_statement(new: &NewRun) -> bool {
    new.steps.is_empty() && new.ledger.is_empty()
}

pub(crate) async fn create_run(
    c: &mut PgConnection,
    sql: &Sql,
    new: &NewRun,
) -> Result<CreatedRun> {
    let op = "create_run";
    let scope = new.claim_scope.as_str();
    if let Some(key) = &new.idempotency_key {
        if let Some(existing) = task_by_key(c, sql, op, scope, key).await? {
            return Ok(existing);
        }
    }
    let workflow = encode_workflow(op, &new.workflow)?;
    // The task, its root run and the workers' wake-up in one statement that returns both rows.
    // A concurrent submit with the same key waits on the unique index, then inserts nothing.
    const Q: &str = concat!(
        "WITH task AS (INSERT INTO sw_workflow_tasks AS t (task_id, task_name, state, params_json, \
         submitted_by_owner_id, claim_scope, idempotency_scope, idempotency_key, created_at, \
         updated_at, max_attempts) \
         VALUES ($1, 'workflow.run', 'pending', $2, $3, $4, $5, $6, $7, $7, $8) \
         ON CONFLICT (idempotency_scope, idempotency_key) \
         WHERE idempotency_scope IS NOT NULL AND idempotency_key IS NOT NULL DO NOTHING RETURNING ",
        task_columns_t!(),
        "), run AS (INSERT INTO sw_workflow_runs AS r (run_id, task_id, root_run_id, state, \
         workflow_run_json, args_json, budget_total, budget_spent, created_at, updated_at) \
         SELECT $9, $1, $9, 'pending', $10, $11, $12, 0, $7, $7 FROM task RETURNING ",
        run_columns_r!(),
        "), woken AS (SELECT pg_notify($13, 'work') FROM run WHERE $14) \
         SELECT task.*, run.*, (SELECT COUNT(*) FROM woken) AS woken FROM task, run"
    );
    let row = sql
        .query(Q)
        .bind(&new.task_id)
        .bind(&new.params)
        .bind(&new.owner_id)
        .bind(scope)
        .bind(new.idempotency_key.as_ref().map(|_| scope))
        .bind(&new.idempotency_key)
        .bind(new.now)
        .bind(i64::from(new.max_attempts.max(1)))
        .bind(&new.run_id)
        .bind(&workflow)
        .bind(&new.args)
        .bind(new.budget_total.map(int))
        .bind(sql.notify_channel().to_owned())
        .bind(new.claim_scope == ClaimScope::Runner)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    let Some(row) = row else {
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = task_by_key(c, sql, op, scope, key).await? {
                return Ok(existing);
            }
        }
        return Err(StoreError::new(
            StoreErrorKind::Conflict,
            op,
            format!("task {} could not be created", new.task_id),
        ));
    };
    let (task, run) = (
        rows::task_prefixed(&row, "t_")?,
        rows::run_prefixed(&row, "r_")?,
    );
    insert_step_rows(c, sql, op, &new.steps).await?;
    insert_ledger(c, sql, op, &new.ledger).await?;
    Ok(CreatedRun {
        task,
        run,
        created: true,
    })
}

pub(crate) async fn create_child_run(
    c: &mut PgConnection,
    sql: &Sql,
    child: &NewChildRun,
) -> Result<RunRecord> {
    let op = "create_child_run";
    let workflow = encode_workflow(op, &child.workflow)?;
    let inserted = execute(
        c,
        op,
        sql.query(
            "INSERT INTO sw_workflow_runs (run_id, task_id, root_run_id, parent_run_id, parent_step_id, state, \
             workflow_run_json, args_json, budget_spent, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, 0, $8, $8) ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(&child.run_id)
        .bind(&child.task_id)
        .bind(&child.root_run_id)
        .bind(&child.parent_run_id)
        .bind(&child.parent_step_id)
        .bind(&workflow)
        .bind(&child.args)
        .bind(child.now),
    )
    .await?;
    if inserted == 0 {
        execute(
            c,
            op,
            sql.query(
                "UPDATE sw_workflow_runs SET state = 'running', failure_reason_json = NULL, updated_at = $2 \
                 WHERE run_id = $1 AND state <> 'completed'",
            )
            .bind(&child.run_id)
            .bind(child.now),
        )
        .await?;
    }
    get_run(c, sql, &child.run_id)
        .await?
        .ok_or_else(|| not_found(op, "run", &child.run_id))
}

pub(crate) async fn finish_child_run(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    outcome: &RunOutcome,
    now: i64,
) -> Result<()> {
    let op = "finish_child_run";
    let (state, payload, reason) = match outcome {
        RunOutcome::Completed(value) => ("completed", Some(value), None),
        RunOutcome::Failed(reason) => ("failed", None, Some(reason)),
        RunOutcome::Cancelled(reason) => ("cancelled", None, Some(reason)),
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
        sql.query(
            "UPDATE sw_workflow_runs SET state = $2, completed_payload_json = $3, failure_reason_json = $4, \
             updated_at = $5 WHERE run_id = $1 AND state <> 'completed'",
        )
        .bind(run_id)
        .bind(state)
        .bind(payload)
        .bind(reason)
        .bind(now),
    )
    .await?;
    if changed == 0 && get_run(c, sql, run_id).await?.is_none() {
        return Err(not_found(op, "run", run_id));
    }
    Ok(())
}

pub(crate) async fn delete_task(c: &mut PgConnection, sql: &Sql, task_id: &str) -> Result<bool> {
    let op = "delete_task";
    let Some(task) = lock_task(c, sql, op, task_id).await? else {
        return Ok(false);
    };
    if !task.state.is_terminal() {
        return Err(smol_durable_core::store::unfinished_task(
            task_id,
            &task.state,
        ));
    }
    // Any run not terminal (`State::is_terminal`).
    let unfinished: Option<String> = sql
        .query(
            "SELECT state FROM sw_workflow_runs WHERE task_id = $1 \
             AND state NOT IN ('completed', 'failed', 'cancelled') LIMIT 1",
        )
        .bind(task_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?
        .map(|row| row.try_get::<String, _>(0))
        .transpose()
        .map_err(|e| map_error(op, e))?;
    if let Some(state) = unfinished {
        return Err(smol_durable_core::store::unfinished_task(
            task_id,
            &State::parse(&state),
        ));
    }
    for statement in [
        "DELETE FROM sw_workflow_events WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
        "DELETE FROM sw_budget_ledger WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
        "DELETE FROM sw_workflow_signals WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
        "DELETE FROM sw_workflow_steps WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
        "DELETE FROM sw_workflow_attempts WHERE task_id = $1",
        // Runs point at their root and parent; foreign keys are checked at the end of the
        // statement, when all of them are gone.
        "DELETE FROM sw_workflow_runs WHERE task_id = $1",
        "DELETE FROM sw_workflow_tasks WHERE task_id = $1",
    ] {
        execute(c, op, sql.query(statement).bind(task_id)).await?;
    }
    Ok(true)
}
