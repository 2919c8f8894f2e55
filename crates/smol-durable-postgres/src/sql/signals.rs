//! Signals: each run's mailbox, and the open waits that read it.

use super::*;

/// Makes the task due now (and wakes idle workers) when one of `signals` (else: the pending
/// signals of its runs) answers an open wait of its runs (of `run_id` only, when given), as
/// [`due_for_signals`] says. The caller holds the task row locked: a `finish_attempt` that
/// parks the task and a `send_signal` for one of its runs are ordered on it, and whichever
/// commits second sees the other.
pub(super) async fn wake_for_signals(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    task_id: &str,
    run_id: Option<&str>,
    signals: Option<&[SignalRecord]>,
    now: i64,
) -> Result<()> {
    let Some(task) = get_task(c, sql, task_id).await? else {
        return Ok(());
    };
    if wake_not_before(&task.state, task.not_before, now).is_none() {
        return Ok(());
    }
    const WAITS: &str = concat!(
        "SELECT ",
        step_columns!(),
        " FROM sw_workflow_steps WHERE step_kind = 'wait' AND state <> 'completed' \
         AND run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1) \
         AND ($2::TEXT IS NULL OR run_id = $2)"
    );
    let waits = all(
        c,
        op,
        sql.query(WAITS)
            .bind(task_id.to_owned())
            .bind(run_id.map(str::to_owned)),
        rows::step,
    )
    .await?;
    if waits.is_empty() {
        return Ok(());
    }
    let pending;
    let signals = match signals {
        Some(signals) => signals,
        None => {
            const PENDING: &str = concat!(
                "SELECT ",
                signal_columns!(),
                " FROM sw_workflow_signals WHERE state = 'pending' \
                 AND run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1) \
                 ORDER BY seq"
            );
            pending = all(
                c,
                op,
                sql.query(PENDING).bind(task_id.to_owned()),
                rows::signal,
            )
            .await?;
            &pending
        }
    };
    if let Some(at) = due_for_signals(&task.state, task.not_before, now, &waits, signals) {
        execute(
            c,
            op,
            sql.query(
                "UPDATE sw_workflow_tasks SET not_before = $2, updated_at = $3 WHERE task_id = $1",
            )
            .bind(task_id.to_owned())
            .bind(at)
            .bind(now),
        )
        .await?;
        notify_work(c, sql, op).await?;
    }
    Ok(())
}

pub(crate) async fn send_signal(
    c: &mut PgConnection,
    sql: &Sql,
    new: &NewSignal,
) -> Result<SignalSend> {
    let op = "send_signal";
    let Some(run) = get_run(c, sql, &new.run_id).await? else {
        return Ok(SignalSend::RunNotFound);
    };
    // Locked before anything is written, so this is ordered against a `finish_attempt` that
    // parks the task (see `wake_for_signals`); the run is read again under the lock, as a
    // child run may have finished meanwhile.
    let task = lock_task(c, sql, op, &run.task_id).await?;
    let Some(run) = get_run(c, sql, &new.run_id).await? else {
        return Ok(SignalSend::RunNotFound);
    };
    let task_state = task.map_or(State::Pending, |task| task.state);
    // A repeated send answers as the first did, even after the run finished.
    if let Some(key) = &new.idempotency_key {
        const Q: &str = concat!(
            "SELECT ",
            signal_columns!(),
            " FROM sw_workflow_signals WHERE run_id = $1 AND idempotency_key = $2"
        );
        let earlier = one(
            c,
            op,
            sql.query(Q).bind(new.run_id.clone()).bind(key.clone()),
            rows::signal,
        )
        .await?;
        if let Some(earlier) = earlier {
            return Ok(SignalSend::Duplicate(earlier));
        }
    }
    for state in [&run.state, &task_state] {
        if !takes_signals(state) {
            return Ok(SignalSend::RunFinished(state.clone()));
        }
    }
    const INSERT: &str = concat!(
        "INSERT INTO sw_workflow_signals (signal_id, run_id, root_run_id, name, payload_json, \
         idempotency_key, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING ",
        signal_columns!()
    );
    let stored = one(
        c,
        op,
        sql.query(INSERT)
            .bind(new.signal_id.clone())
            .bind(new.run_id.clone())
            .bind(run.root_run_id.clone())
            .bind(new.name.clone())
            .bind(new.payload.clone())
            .bind(new.idempotency_key.clone())
            .bind(new.now),
        rows::signal,
    )
    .await?
    .ok_or_else(|| StoreError::new(StoreErrorKind::Other, op, "the insert returned no row"))?;
    wake_for_signals(
        c,
        sql,
        op,
        &run.task_id,
        Some(&new.run_id),
        Some(std::slice::from_ref(&stored)),
        new.now,
    )
    .await?;
    execute(
        c,
        op,
        sql.query("SELECT pg_notify($1, 'signal:' || $2)")
            .bind(sql.notify_channel().to_owned())
            .bind(new.run_id.clone()),
    )
    .await?;
    Ok(SignalSend::Stored(stored))
}

pub(crate) async fn pending_signals(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    names: &[String],
    limit: usize,
) -> Result<Vec<SignalRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        signal_columns!(),
        " FROM sw_workflow_signals WHERE run_id = $1 AND state = 'pending' \
         AND name = ANY($2) ORDER BY seq LIMIT $3"
    );
    all(
        c,
        "pending_signals",
        sql.query(Q)
            .bind(run_id.to_owned())
            .bind(names.to_vec())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        rows::signal,
    )
    .await
}

pub(crate) async fn consume_signal(
    c: &mut PgConnection,
    sql: &Sql,
    consume: &ConsumeSignal,
) -> Result<SignalConsume> {
    let op = "consume_signal";
    const LOCK: &str = concat!(
        "SELECT ",
        signal_columns!(),
        " FROM sw_workflow_signals WHERE signal_id = $1 FOR UPDATE"
    );
    let signal = one(
        c,
        op,
        sql.query(LOCK).bind(consume.signal_id.clone()),
        rows::signal,
    )
    .await?;
    if signal
        .as_ref()
        .is_none_or(|signal| signal.state != SignalState::Pending)
    {
        return Ok(SignalConsume::SignalTaken(signal));
    }
    let completed = complete_step(
        c,
        sql,
        &CompleteStep {
            step_id: consume.step_id.clone(),
            fence: consume.fence,
            result: consume.result.clone(),
            ledger: Vec::new(),
            now: consume.now,
        },
    )
    .await?;
    let step = match completed {
        StepCas::Applied(step) => step,
        StepCas::Conflict(current) => return Ok(SignalConsume::StepConflict(current)),
    };
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_signals SET state = 'consumed', step_id = $2, updated_at = $3 \
             WHERE signal_id = $1",
        )
        .bind(consume.signal_id.clone())
        .bind(consume.step_id.clone())
        .bind(consume.now),
    )
    .await?;
    Ok(SignalConsume::Consumed(step))
}

pub(crate) async fn reject_signal(
    c: &mut PgConnection,
    sql: &Sql,
    signal_id: &str,
    reason: &Value,
    now: i64,
) -> Result<bool> {
    let changed = execute(
        c,
        "reject_signal",
        sql.query(
            "UPDATE sw_workflow_signals SET state = 'rejected', reason_json = $2, updated_at = $3 \
             WHERE signal_id = $1 AND state = 'pending'",
        )
        .bind(signal_id.to_owned())
        .bind(reason.clone())
        .bind(now),
    )
    .await?;
    Ok(changed > 0)
}

pub(crate) async fn list_signals(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Vec<SignalRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        signal_columns!(),
        " FROM sw_workflow_signals WHERE run_id = $1 ORDER BY seq"
    );
    all(
        c,
        "list_signals",
        sql.query(Q).bind(run_id.to_owned()),
        rows::signal,
    )
    .await
}

pub(crate) async fn list_open_waits(
    c: &mut PgConnection,
    sql: &Sql,
    filter: &WaitFilter,
) -> Result<Vec<StepRecord>> {
    let columns = step_columns!()
        .split(',')
        .map(|column| format!("s.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "SELECT {columns} FROM sw_workflow_steps s JOIN sw_workflow_runs r ON r.run_id = s.run_id \
         WHERE s.step_kind = 'wait' AND s.state <> 'completed' \
         AND r.state NOT IN ('completed', 'failed', 'cancelled') \
         AND ($1::TEXT IS NULL OR s.run_id = $1) AND ($2::TEXT IS NULL OR r.task_id = $2) \
         ORDER BY s.created_at, s.step_id LIMIT $3"
    );
    all(
        c,
        "list_open_waits",
        sql.dynamic(&text)
            .bind(filter.run_id.clone())
            .bind(filter.task_id.clone())
            .bind(
                filter
                    .limit
                    .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX)),
            ),
        rows::step,
    )
    .await
}
