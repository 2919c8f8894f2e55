//! Steps: insert-if-absent, claims, fenced completion and failure (with their ledger rows),
//! lease renewal.

use super::*;

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

pub(super) fn step_by_id(
    c: &Connection,
    op: &'static str,
    step_id: &str,
) -> Result<Option<StepRecord>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE step_id = ?1");
    one(c, op, &sql, [step_id], rows::step)
}

pub(crate) fn load_steps(c: &Connection, run_id: &str) -> Result<Vec<StepRecord>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE run_id = ?1 ORDER BY created_at, step_id");
    all(c, "load_steps", &sql, [run_id], rows::step)
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

/// Inserts a whole step row as given (a fork's copy).
pub(super) fn insert_step_row(c: &Connection, op: &'static str, step: &StepRecord) -> Result<()> {
    execute(
        c,
        op,
        "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, \
         input_signature_hash, input_signature_json, state, input_json, result_json, \
         failure_reason_json, worker_id, lease_expires_at, attempts, last_attempt_at, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            step.step_id,
            step.run_id,
            step.root_run_id,
            step.kind.as_str(),
            step.checkpoint_name,
            step.input_signature_hash,
            step.input_signature_json,
            step.state.as_str(),
            text(&step.input),
            step.result.as_ref().map(text),
            step.failure_reason.as_ref().map(text),
            step.worker_id,
            step.lease_expires_at,
            step.fence,
            step.last_attempt_at,
            step.created_at,
            step.updated_at,
        ],
    )?;
    Ok(())
}

/// The outcome of a compare-and-set `UPDATE … RETURNING`: the updated row, or the current one.
pub(super) fn cas_outcome(
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

pub(super) fn insert_ledger(
    c: &Connection,
    op: &'static str,
    entries: &[LedgerEntry],
) -> Result<()> {
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
                entry.source_type.as_str(),
                entry.source_id,
                int(entry.output_tokens),
                entry.usage.as_ref().map(|usage| text(&serde_json::json!(usage))),
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

pub(crate) fn record_step(c: &Connection, record: RecordStep) -> Result<StepCas> {
    let op = "record_step";
    // Inserted only while the attempt that made the call is running: a deposed one is fenced.
    const SQL: &str =
        "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, \
         input_signature_hash, input_signature_json, state, input_json, result_json, worker_id, \
         attempts, last_attempt_at, created_at, updated_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 'completed', ?8, ?9, ?10, 1, ?11, ?11, ?12 \
         WHERE EXISTS (SELECT 1 FROM sw_workflow_attempts WHERE attempt_id = ?13 AND state = 'running') \
         ON CONFLICT (run_id, checkpoint_name) DO NOTHING RETURNING 1";
    let new = &record.step;
    let inserted = one(
        c,
        op,
        SQL,
        params![
            new.step_id,
            new.run_id,
            new.root_run_id,
            new.kind.as_str(),
            new.checkpoint_name,
            new.input_signature_hash,
            new.input_signature_json,
            text(&new.input),
            text(&record.result),
            new.worker_id,
            new.now,
            record.now,
            record.attempt_id,
        ],
        |_| Ok(()),
    )?;
    match inserted {
        // The row as written, without reading its documents back.
        Some(()) => {
            insert_ledger(c, op, &record.ledger)?;
            Ok(StepCas::Applied(
                record.step.into_completed_row(record.result, record.now),
            ))
        }
        None => Ok(StepCas::Conflict(get_step(
            c,
            &new.run_id,
            &new.checkpoint_name,
        )?)),
    }
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
