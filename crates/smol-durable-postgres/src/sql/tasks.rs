//! Tasks and attempts: opening, finishing and claiming attempts, closing tasks, cancellation
//! requests.

use super::*;

pub(crate) async fn get_task(
    c: &mut PgConnection,
    sql: &Sql,
    task_id: &str,
) -> Result<Option<TaskRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM sw_workflow_tasks WHERE task_id = $1"
    );
    one(c, "get_task", sql.query(Q).bind(task_id), rows::task).await
}

/// The task row, locked until the transaction ends.
pub(super) async fn lock_task(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    task_id: &str,
) -> Result<Option<TaskRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        task_columns!(),
        " FROM sw_workflow_tasks WHERE task_id = $1 FOR UPDATE"
    );
    one(c, op, sql.query(Q).bind(task_id), rows::task).await
}

pub(crate) async fn list_attempts(
    c: &mut PgConnection,
    sql: &Sql,
    task_id: &str,
) -> Result<Vec<AttemptRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM sw_workflow_attempts WHERE task_id = $1 ORDER BY attempt"
    );
    all(
        c,
        "list_attempts",
        sql.query(Q).bind(task_id),
        rows::attempt,
    )
    .await
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

/// Claims the (locked) task for the claimant and opens attempt max+1.
pub(super) async fn open_attempt(
    c: &mut PgConnection,
    sql: &Sql,
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
        sql.query(
            "UPDATE sw_workflow_attempts SET state = $4, completed_at = $2, lease_expires_at = NULL, \
             failure_reason_json = $3 WHERE task_id = $1 AND state = 'running'",
        )
        .bind(&task.task_id)
        .bind(now)
        .bind(&abandoned.reason)
        .bind(abandoned.state.as_str()),
    )
    .await?;
    // Steps held by the previous holder (or an earlier attempt of this owner) can be reclaimed
    // at once: their holder is gone.
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_steps SET lease_expires_at = $2 \
             WHERE root_run_id = $1 AND state = 'running' AND (worker_id = $3 OR worker_id = $4)",
        )
        .bind(run_id)
        .bind(now)
        .bind(owner)
        .bind(&task.claimed_by_owner_id),
    )
    .await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_tasks SET state = 'running', claimed_by_owner_id = $2, lease_expires_at = $3, \
             not_before = NULL, updated_at = $4, \
             submitted_by_owner_id = CASE WHEN claim_scope = 'local' THEN $2 ELSE submitted_by_owner_id END \
             WHERE task_id = $1",
        )
        .bind(&task.task_id)
        .bind(owner)
        .bind(lease)
        .bind(now),
    )
    .await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_runs SET state = 'running', failure_reason_json = NULL, updated_at = $2, \
             cancel_requested_at = CASE WHEN $3 THEN NULL ELSE cancel_requested_at END WHERE run_id = $1",
        )
        .bind(run_id)
        .bind(now)
        .bind(revive),
    )
    .await?;
    const Q: &str = concat!(
        "INSERT INTO sw_workflow_attempts (attempt_id, run_id, task_id, attempt, worker_id, state, \
         lease_expires_at, started_at) \
         SELECT $1, $2, $3, COALESCE(MAX(attempt), 0) + 1, $4, 'running', $5, $6 \
         FROM sw_workflow_attempts WHERE task_id = $3 RETURNING ",
        attempt_columns!()
    );
    one(
        c,
        op,
        sql.query(Q)
            .bind(attempt_id)
            .bind(run_id)
            .bind(&task.task_id)
            .bind(owner)
            .bind(lease)
            .bind(now),
        rows::attempt,
    )
    .await?
    .ok_or_else(|| not_found(op, "attempt", attempt_id))
}

pub(crate) async fn start_attempt(
    c: &mut PgConnection,
    sql: &Sql,
    start: &StartAttempt,
) -> Result<AttemptStart> {
    let op = "start_attempt";
    let task = lock_task(c, sql, op, &start.task_id)
        .await?
        .ok_or_else(|| not_found(op, "task", &start.task_id))?;
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
        sql,
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
    )
    .await?;
    Ok(AttemptStart::Started(attempt))
}

/// Whether `finish` is one statement with nothing around it: an attempt that ends its task
/// for good neither wakes workers nor reads the mailbox, so no lock on the task needs to
/// outlive [`close_attempt`]'s statement (whose own fence is the attempt's state).
pub(crate) fn finishes_in_one_statement(finish: &FinishAttempt) -> bool {
    finish.end.run_and_task != State::Pending
}

pub(crate) async fn finish_attempt(
    c: &mut PgConnection,
    sql: &Sql,
    finish: &FinishAttempt,
) -> Result<()> {
    let op = "finish_attempt";
    let task = lock_task(c, sql, op, &finish.task_id)
        .await?
        .ok_or_else(|| not_found(op, "task", &finish.task_id))?;
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
    close_attempt(c, sql, finish).await?;
    let end = &finish.end;
    let scope = end.claim_scope.as_ref().unwrap_or(&task.claim_scope);
    if *scope == ClaimScope::Runner && end.run_and_task == State::Pending {
        notify_work(c, sql, op).await?;
    }
    // A signal that arrived while the attempt was ending found the task still running. Only a
    // task handed back for later can be woken: the others need no look at their mailbox.
    if wake_not_before(&end.run_and_task, end.not_before, finish.now).is_some() {
        wake_for_signals(c, sql, op, &finish.task_id, None, None, finish.now).await?;
    }
    Ok(())
}

/// The attempt, the root run (with its cached spend), the task and the unfinished child runs,
/// in one statement, fenced by the attempt still `running` and its task still claimed by
/// `finish.owner_id`: `LeaseLost` otherwise, changing nothing.
pub(crate) async fn close_attempt(
    c: &mut PgConnection,
    sql: &Sql,
    finish: &FinishAttempt,
) -> Result<()> {
    let op = "finish_attempt";
    let end = &finish.end;
    // The attempt, the root run (with its cached spend), the task and the unfinished child runs
    // in one statement — each part only if the attempt was still running. (PostgreSQL runs every
    // data-modifying part of a WITH whether or not the final SELECT reads it.) `owner` locks the
    // task before the attempt row, in the order claims, takeovers and heartbeats lock them, so
    // a finish racing one of them waits instead of deadlocking; the lock re-checks the owner.
    const Q: &str = "WITH owner AS (SELECT 1 FROM sw_workflow_tasks WHERE task_id = $11 \
           AND claimed_by_owner_id = $14 FOR NO KEY UPDATE), \
         closed AS (UPDATE sw_workflow_attempts SET state = $2, completed_at = $3, \
         failure_reason_json = $4, lease_expires_at = NULL \
         WHERE attempt_id = $1 AND state = 'running' AND EXISTS (SELECT 1 FROM owner) \
         RETURNING attempt_id), \
         root AS (UPDATE sw_workflow_runs SET state = $6, completed_payload_json = $7, \
         failure_reason_json = $4, updated_at = $3, budget_spent = ( \
           SELECT COALESCE(SUM(output_tokens), 0)::BIGINT FROM sw_budget_ledger \
           WHERE root_run_id = $5 AND source_type <> $8) \
         WHERE run_id = $5 AND EXISTS (SELECT 1 FROM closed)), \
         task AS (UPDATE sw_workflow_tasks SET state = $6, completed_payload_json = $7, \
         failure_reason_json = $4, lease_expires_at = NULL, not_before = $9, \
         claimed_by_owner_id = NULL, updated_at = $3, claim_scope = COALESCE($10, claim_scope) \
         WHERE task_id = $11 AND EXISTS (SELECT 1 FROM closed)), \
         children AS (UPDATE sw_workflow_runs SET state = $12, failure_reason_json = $13, \
         updated_at = $3 WHERE root_run_id = $5 AND run_id <> root_run_id \
         AND state IN ('pending', 'running') AND EXISTS (SELECT 1 FROM closed)) \
         SELECT COUNT(*) FROM closed";
    let closed: i64 = scalar(
        c,
        op,
        sql.query(Q)
            .bind(&finish.attempt_id)
            .bind(end.attempt.as_str())
            .bind(finish.now)
            .bind(&end.reason)
            .bind(&finish.run_id)
            .bind(end.run_and_task.as_str())
            .bind(&end.payload)
            .bind(LedgerSource::COPIED_STEP)
            .bind(end.not_before)
            .bind(
                end.claim_scope
                    .as_ref()
                    .map(|scope| scope.as_str().to_owned()),
            )
            .bind(&finish.task_id)
            .bind(end.unfinished_children.state.as_str())
            .bind(&end.unfinished_children.reason)
            .bind(&finish.owner_id),
    )
    .await?;
    if closed == 0 {
        return Err(StoreError::new(
            StoreErrorKind::LeaseLost,
            op,
            format!(
                "attempt {} is not running, or task {} is no longer claimed by {}",
                finish.attempt_id, finish.task_id, finish.owner_id
            ),
        ));
    }
    Ok(())
}

/// How one run of the claim statement ended.
enum Round {
    /// Nothing eligible.
    Empty,
    /// A task claimed, its attempt opened.
    Opened(Box<ClaimedTask>),
    /// A task that must not run again: to be closed with the verdict's closure (`opened`: the
    /// statement opened an attempt on it all the same).
    MustClose {
        task_id: String,
        closure: Closure,
        opened: bool,
    },
    /// A task the core admits but the statement refused: to be opened by hand.
    MustOpen {
        task_id: String,
        run_id: String,
        counted: u32,
    },
}

/// The claim, in the transaction around `c`: claims until a task opens or nothing is
/// eligible, closing the tasks that must not run on the way.
pub(crate) async fn claim_next_task(
    c: &mut PgConnection,
    sql: &Sql,
    claim: &ClaimNextTask,
) -> Result<Option<ClaimedTask>> {
    let op = "claim_next_task";
    loop {
        match claim_round(c, sql, claim).await? {
            Round::Empty => return Ok(None),
            Round::Opened(claimed) => return Ok(Some(*claimed)),
            Round::MustClose {
                task_id,
                closure,
                opened,
            } => {
                if opened {
                    tracing::error!(%task_id, "the claim statement opened an attempt decide::claim_verdict refuses; closing the task");
                }
                close_task(c, sql, op, &task_id, &closure, claim.now).await?;
            }
            Round::MustOpen {
                task_id,
                run_id,
                counted,
            } => {
                tracing::error!(%task_id, "the claim statement refused a task decide::claim_verdict admits; opening it");
                let task = get_task(c, sql, &task_id)
                    .await?
                    .ok_or_else(|| not_found(op, "task", &task_id))?;
                let attempt = open_attempt(
                    c,
                    sql,
                    op,
                    &task,
                    &run_id,
                    Claimant {
                        attempt_id: &claim.attempt_id,
                        owner: &claim.owner_id,
                        lease: claim.lease_expires_at,
                        now: claim.now,
                        revive: false,
                    },
                )
                .await?;
                let task = get_task(c, sql, &task_id)
                    .await?
                    .ok_or_else(|| not_found(op, "task", &task_id))?;
                let run = get_run(c, sql, &run_id)
                    .await?
                    .ok_or_else(|| not_found(op, "run", &run_id))?;
                return Ok(Some(ClaimedTask {
                    task,
                    run,
                    attempt,
                    failed_attempts: counted,
                }));
            }
        }
    }
}

/// The claim as its one statement with no transaction around it, which settles it unless the
/// task found must be closed or opened by hand: then `None`, and the caller claims again with
/// [`claim_next_task`] in a transaction (this statement changed nothing then — or, if it
/// opened an attempt the core refuses, that task is closed here first, being ours).
pub(crate) async fn claim_next_task_alone(
    c: &mut PgConnection,
    sql: &Sql,
    claim: &ClaimNextTask,
) -> Result<Option<Option<ClaimedTask>>> {
    match claim_round(c, sql, claim).await? {
        Round::Empty => Ok(Some(None)),
        Round::Opened(claimed) => Ok(Some(Some(*claimed))),
        Round::MustClose {
            task_id,
            closure,
            opened: true,
        } => {
            tracing::error!(%task_id, "the claim statement opened an attempt decide::claim_verdict refuses; closing the task");
            let op = "claim_next_task";
            let mut tx = sqlx::Connection::begin(&mut *c)
                .await
                .map_err(|e| map_error(op, e))?;
            close_task(&mut tx, sql, op, &task_id, &closure, claim.now).await?;
            tx.commit().await.map_err(|e| map_error(op, e))?;
            Ok(None)
        }
        Round::MustClose { .. } | Round::MustOpen { .. } => Ok(None),
    }
}

async fn claim_round(c: &mut PgConnection, sql: &Sql, claim: &ClaimNextTask) -> Result<Round> {
    let op = "claim_next_task";
    // One statement finds the oldest eligible task (SKIP LOCKED: concurrent workers each take
    // a different one), counts its attempts, and, when it may run again, does all of
    // `open_attempt` for it. A task that must end instead (cancelled while unattended, out of
    // attempts) comes back without an attempt and is closed below. The claim commits without
    // waiting for a flush: the completions that follow it flush it with them.
    //
    // Three rules of the core are spelled in SQL here, for one round trip: which tasks a claim
    // may take (`decide::claimable`, in the WHERE clause so the index finds them), the attempts
    // that count (`decide::counts_against_max_attempts`: failed and running ones) and whether the
    // task opens an attempt (`decide::claim_verdict`: no cancellation requested, attempts left).
    // The row returns what the last two read and the verdict is computed again from it below:
    // the core's verdict wins, and a disagreement is logged as the bug it is. The conformance cases
    // `runner_tasks_stop_after_max_attempts` and `a_claim_never_clears_a_cancellation_request`
    // pin the two together.
    const Q: &str = concat!(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), \
         candidate AS ( \
           SELECT t.task_id, t.claimed_by_owner_id, t.max_attempts, r.run_id, \
             r.cancel_requested_at, \
             (SELECT COUNT(*) FROM sw_workflow_attempts a WHERE a.task_id = t.task_id \
               AND a.state IN ('failed', 'running')) AS counted \
           FROM sw_workflow_tasks t \
           JOIN sw_workflow_runs r ON r.task_id = t.task_id AND r.run_id = r.root_run_id \
           WHERE t.claim_scope = $1 AND ( \
             (t.state = 'pending' AND (t.not_before IS NULL OR t.not_before <= $2)) \
             OR (t.state = 'running' AND (t.lease_expires_at IS NULL OR t.lease_expires_at <= $2))) \
           ORDER BY t.created_at, t.task_id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), \
         chosen AS (SELECT candidate.* FROM candidate, relaxed \
           WHERE cancel_requested_at IS NULL AND counted < GREATEST(max_attempts, 1)), \
         abandoned AS (UPDATE sw_workflow_attempts a SET state = $7, completed_at = $2, \
           lease_expires_at = NULL, failure_reason_json = $6 FROM chosen \
           WHERE a.task_id = chosen.task_id AND a.state = 'running'), \
         expired AS (UPDATE sw_workflow_steps s SET lease_expires_at = $2 FROM chosen \
           WHERE s.root_run_id = chosen.run_id AND s.state = 'running' \
           AND (s.worker_id = $3 OR s.worker_id = chosen.claimed_by_owner_id)), \
         task AS (UPDATE sw_workflow_tasks t SET state = 'running', claimed_by_owner_id = $3, \
           lease_expires_at = $4, not_before = NULL, updated_at = $2, \
           submitted_by_owner_id = CASE WHEN t.claim_scope = 'local' THEN $3 \
             ELSE t.submitted_by_owner_id END \
           FROM chosen WHERE t.task_id = chosen.task_id \
           RETURNING ",
        task_columns_t!(),
        "), \
         run AS (UPDATE sw_workflow_runs r SET state = 'running', failure_reason_json = NULL, \
           updated_at = $2 FROM chosen WHERE r.run_id = chosen.run_id \
           RETURNING ",
        run_columns_r!(),
        "), \
         attempt AS (INSERT INTO sw_workflow_attempts (attempt_id, run_id, task_id, attempt, \
           worker_id, state, lease_expires_at, started_at) \
           SELECT $5, chosen.run_id, chosen.task_id, \
             (SELECT COALESCE(MAX(a.attempt), 0) + 1 FROM sw_workflow_attempts a \
               WHERE a.task_id = chosen.task_id), \
             $3, 'running', $4, $2 FROM chosen RETURNING *) \
         SELECT found.*, attempt.*, task.*, run.* FROM ( \
           SELECT task_id AS candidate_task_id, run_id AS candidate_run_id, counted, \
             max_attempts AS candidate_max_attempts, \
             cancel_requested_at IS NOT NULL AS cancelled FROM candidate) AS found \
         LEFT JOIN attempt ON TRUE LEFT JOIN task ON TRUE LEFT JOIN run ON TRUE"
    );
    let abandoned = Closure::abandoned_attempt();
    let row = sql
        .query(Q)
        .bind(claim.scope.as_str())
        .bind(claim.now)
        .bind(&claim.owner_id)
        .bind(claim.lease_expires_at)
        .bind(&claim.attempt_id)
        .bind(&abandoned.reason)
        .bind(abandoned.state.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    let Some(row) = row else {
        return Ok(Round::Empty);
    };
    let field = |name: &str| map_error(op, sqlx::Error::ColumnNotFound(name.to_owned()));
    let task_id: String = row
        .try_get("candidate_task_id")
        .map_err(|_| field("candidate_task_id"))?;
    let run_id: String = row
        .try_get("candidate_run_id")
        .map_err(|_| field("candidate_run_id"))?;
    let counted: i64 = row.try_get("counted").map_err(|_| field("counted"))?;
    let counted = u32::try_from(counted).unwrap_or(u32::MAX);
    let opened: Option<String> = row.try_get("attempt_id").map_err(|_| field("attempt_id"))?;
    let cancelled: bool = row.try_get("cancelled").map_err(|_| field("cancelled"))?;
    let max_attempts: i64 = row
        .try_get("candidate_max_attempts")
        .map_err(|_| field("candidate_max_attempts"))?;
    let max_attempts = u32::try_from(max_attempts).unwrap_or(u32::MAX);
    // The core's verdict decides; a statement that disagrees with it is a bug, reported,
    // and overruled so the task neither runs against the rule nor blocks the queue.
    Ok(
        match (claim_verdict(cancelled, counted, max_attempts), opened) {
            // The statement returns the task and the run as it left them: no read after it.
            (ClaimVerdict::Open, Some(_)) => Round::Opened(Box::new(ClaimedTask {
                task: rows::task_prefixed(&row, "t_")?,
                run: rows::run_prefixed(&row, "r_")?,
                attempt: rows::attempt(&row)?,
                failed_attempts: counted,
            })),
            (ClaimVerdict::Close(closure), opened) => Round::MustClose {
                task_id,
                closure,
                opened: opened.is_some(),
            },
            (ClaimVerdict::Open, None) => Round::MustOpen {
                task_id,
                run_id,
                counted,
            },
        },
    )
}

/// Ends a task nobody will finish (cancelled while unattended, out of attempts): the task, its
/// running attempts and its unfinished runs (root and children) take `state`.
pub(super) async fn close_task(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    task_id: &str,
    closure: &Closure,
    now: i64,
) -> Result<()> {
    let (state, reason) = (closure.state.as_str(), &closure.reason);
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_tasks SET state = $2, failure_reason_json = $3, claimed_by_owner_id = NULL, \
             lease_expires_at = NULL, updated_at = $4 WHERE task_id = $1",
        )
        .bind(task_id)
        .bind(state)
        .bind(reason)
        .bind(now),
    )
    .await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_attempts SET state = $2, failure_reason_json = $3, completed_at = $4, \
             lease_expires_at = NULL WHERE task_id = $1 AND state = 'running'",
        )
        .bind(task_id)
        .bind(state)
        .bind(reason)
        .bind(now),
    )
    .await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_runs SET state = $2, failure_reason_json = $3, updated_at = $4 \
             WHERE task_id = $1 AND state IN ('pending', 'running')",
        )
        .bind(task_id)
        .bind(state)
        .bind(reason)
        .bind(now),
    )
    .await?;
    Ok(())
}

pub(crate) async fn request_cancel(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    now: i64,
) -> Result<CancelRequest> {
    let op = "request_cancel";
    let Some(run) = get_run(c, sql, run_id).await? else {
        return Ok(CancelRequest::NotFound);
    };
    let task = lock_task(c, sql, op, &run.task_id)
        .await?
        .ok_or_else(|| not_found(op, "task", &run.task_id))?;
    let outcome = cancel_request(&task, now);
    if let CancelRequest::AlreadyFinished(_) = outcome {
        return Ok(outcome);
    }
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_runs SET cancel_requested_at = $2, updated_at = $2 WHERE run_id = $1",
        )
        .bind(&run.root_run_id)
        .bind(now),
    )
    .await?;
    if outcome == CancelRequest::CancelledPending {
        close_task(c, sql, op, &task.task_id, &Closure::cancelled(), now).await?;
    }
    Ok(outcome)
}
