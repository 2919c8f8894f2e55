//! Tasks and attempts: opening, finishing and claiming attempts, closing tasks, cancellation
//! requests.

use super::*;

pub(crate) fn get_task(c: &Connection, task_id: &str) -> Result<Option<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM sw_workflow_tasks WHERE task_id = ?1");
    one(c, "get_task", &sql, [task_id], rows::task)
}

pub(crate) fn list_attempts(c: &Connection, task_id: &str) -> Result<Vec<AttemptRecord>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM sw_workflow_attempts WHERE task_id = ?1 ORDER BY attempt"
    );
    all(c, "list_attempts", &sql, [task_id], rows::attempt)
}

/// Who opens an attempt, and when.
pub(super) struct Claimant<'a> {
    attempt_id: &'a str,
    owner: &'a str,
    lease: i64,
    now: i64,
    /// A resume: clears an earlier cancellation request (a plain claim never does).
    revive: bool,
}

/// Claims the task for the claimant and opens attempt max+1 (shared by start and claim-next).
pub(super) fn open_attempt(
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
         lease_expires_at = NULL, not_before = ?5, claimed_by_owner_id = NULL, updated_at = ?6, \
         claim_scope = COALESCE(?7, claim_scope) WHERE task_id = ?1",
        params![
            finish.task_id,
            next_state,
            payload,
            reason,
            not_before,
            finish.now,
            end.claim_scope.as_ref().map(|scope| scope.as_str())
        ],
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
    // A signal that arrived while the attempt was ending found the task still running.
    wake_for_signals(c, op, &finish.task_id, None, None, finish.now)?;
    Ok(())
}

pub(crate) fn claim_next_task(
    c: &Connection,
    claim: &ClaimNextTask,
) -> Result<Option<ClaimedTask>> {
    let op = "claim_next_task";
    // The WHERE clause is decide::claimable, in SQL so the index finds the task.
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
        let states: Vec<String> = c
            .prepare_cached("SELECT state FROM sw_workflow_attempts WHERE task_id = ?1")
            .and_then(|mut s| {
                s.query_map([&task.task_id], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(|e| map_error(op, e))?;
        let counted = states
            .iter()
            .filter(|state| counts_against_max_attempts(&State::parse(state)))
            .count();
        let attempts = u32::try_from(counted).unwrap_or(u32::MAX);
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
pub(super) fn close_task(
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
