//! Signals: each run's mailbox, and the open waits that read it.

use super::*;

fn signal_by_id(c: &Connection, op: &'static str, signal_id: &str) -> Result<Option<SignalRecord>> {
    let sql = format!("SELECT {SIGNAL_COLUMNS} FROM sw_workflow_signals WHERE signal_id = ?1");
    one(c, op, &sql, [signal_id], rows::signal)
}

/// Makes the task due now when one of `signals` (else: the pending signals of its runs)
/// answers an open wait of its runs (of `run_id` only, when given), as
/// [`due_for_signals`] says. Runs in the writer's transaction, which holds the database.
pub(super) fn wake_for_signals(
    c: &Connection,
    op: &'static str,
    task_id: &str,
    run_id: Option<&str>,
    signals: Option<&[SignalRecord]>,
    now: i64,
) -> Result<()> {
    let Some(task) = get_task(c, task_id)? else {
        return Ok(());
    };
    if wake_not_before(&task.state, task.not_before, now).is_none() {
        return Ok(());
    }
    const RUNS: &str = "SELECT run_id FROM sw_workflow_runs WHERE task_id = ?1";
    let waits_sql = format!(
        "SELECT {STEP_COLUMNS} FROM sw_workflow_steps WHERE step_kind = 'wait' \
         AND state != 'completed' AND run_id IN ({RUNS}) AND (?2 IS NULL OR run_id = ?2)"
    );
    let waits = all(c, op, &waits_sql, params![task_id, run_id], rows::step)?;
    if waits.is_empty() {
        return Ok(());
    }
    let pending;
    let signals = match signals {
        Some(signals) => signals,
        None => {
            let sql = format!(
                "SELECT {SIGNAL_COLUMNS} FROM sw_workflow_signals WHERE state = 'pending' \
                 AND run_id IN ({RUNS}) ORDER BY seq"
            );
            pending = all(c, op, &sql, params![task_id], rows::signal)?;
            &pending
        }
    };
    if let Some(at) = due_for_signals(&task.state, task.not_before, now, &waits, signals) {
        execute(
            c,
            op,
            "UPDATE sw_workflow_tasks SET not_before = ?2, updated_at = ?3 WHERE task_id = ?1",
            params![task_id, at, now],
        )?;
    }
    Ok(())
}

pub(crate) fn send_signal(c: &Connection, new: &NewSignal) -> Result<SignalSend> {
    let op = "send_signal";
    let Some(run) = get_run(c, &new.run_id)? else {
        return Ok(SignalSend::RunNotFound);
    };
    let task_state = get_task(c, &run.task_id)?.map_or(State::Pending, |task| task.state);
    // A repeated send answers as the first did, even after the run finished.
    if let Some(key) = &new.idempotency_key {
        let sql = format!(
            "SELECT {SIGNAL_COLUMNS} FROM sw_workflow_signals WHERE run_id = ?1 AND idempotency_key = ?2"
        );
        if let Some(earlier) = one(c, op, &sql, params![new.run_id, key], rows::signal)? {
            return Ok(SignalSend::Duplicate(earlier));
        }
    }
    for state in [&run.state, &task_state] {
        if !takes_signals(state) {
            return Ok(SignalSend::RunFinished(state.clone()));
        }
    }
    let sql = format!(
        "INSERT INTO sw_workflow_signals (signal_id, run_id, root_run_id, name, payload_json, \
         idempotency_key, state, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7) RETURNING {SIGNAL_COLUMNS}"
    );
    let stored = one(
        c,
        op,
        &sql,
        params![
            new.signal_id,
            new.run_id,
            run.root_run_id,
            new.name,
            text(&new.payload),
            new.idempotency_key,
            new.now,
        ],
        rows::signal,
    )?
    .ok_or_else(|| not_found(op, "signal", &new.signal_id))?;
    wake_for_signals(
        c,
        op,
        &run.task_id,
        Some(&new.run_id),
        Some(std::slice::from_ref(&stored)),
        new.now,
    )?;
    Ok(SignalSend::Stored(stored))
}

pub(crate) fn pending_signals(
    c: &Connection,
    run_id: &str,
    names: &[String],
    limit: usize,
) -> Result<Vec<SignalRecord>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // One bound parameter per name; a wait has at most `MAX_WAIT_NAMES` of them per wait.
    let marks = (0..names.len())
        .map(|index| format!("?{}", index + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {SIGNAL_COLUMNS} FROM sw_workflow_signals WHERE run_id = ?1 AND state = 'pending' \
         AND name IN ({marks}) ORDER BY seq LIMIT ?2"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        run_id.to_owned().into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    values.extend(names.iter().map(|name| name.clone().into()));
    all(
        c,
        "pending_signals",
        &sql,
        params_from_iter(values),
        rows::signal,
    )
}

pub(crate) fn consume_signal(c: &Connection, consume: &ConsumeSignal) -> Result<SignalConsume> {
    let op = "consume_signal";
    // The writer's transaction holds the database: what is read here stays true until commit.
    let signal = signal_by_id(c, op, &consume.signal_id)?;
    if signal
        .as_ref()
        .is_none_or(|signal| signal.state != SignalState::Pending)
    {
        return Ok(SignalConsume::SignalTaken(signal));
    }
    let sql = format!(
        "UPDATE sw_workflow_steps SET state = 'completed', result_json = ?2, lease_expires_at = NULL, \
         updated_at = ?3 WHERE step_id = ?1 AND state = 'running' AND attempts = ?4 \
         RETURNING {STEP_COLUMNS}"
    );
    let completed = one(
        c,
        op,
        &sql,
        params![
            consume.step_id,
            text(&consume.result),
            consume.now,
            consume.fence
        ],
        rows::step,
    )?;
    let Some(step) = completed else {
        return Ok(SignalConsume::StepConflict(step_by_id(
            c,
            op,
            &consume.step_id,
        )?));
    };
    execute(
        c,
        op,
        "UPDATE sw_workflow_signals SET state = 'consumed', step_id = ?2, updated_at = ?3 \
         WHERE signal_id = ?1",
        params![consume.signal_id, consume.step_id, consume.now],
    )?;
    Ok(SignalConsume::Consumed(step))
}

pub(crate) fn reject_signal(
    c: &Connection,
    signal_id: &str,
    reason: &Value,
    now: i64,
) -> Result<bool> {
    let changed = execute(
        c,
        "reject_signal",
        "UPDATE sw_workflow_signals SET state = 'rejected', reason_json = ?2, updated_at = ?3 \
         WHERE signal_id = ?1 AND state = 'pending'",
        params![signal_id, text(reason), now],
    )?;
    Ok(changed > 0)
}

pub(crate) fn list_signals(c: &Connection, run_id: &str) -> Result<Vec<SignalRecord>> {
    let sql =
        format!("SELECT {SIGNAL_COLUMNS} FROM sw_workflow_signals WHERE run_id = ?1 ORDER BY seq");
    all(c, "list_signals", &sql, [run_id], rows::signal)
}

pub(crate) fn list_open_waits(c: &Connection, filter: &WaitFilter) -> Result<Vec<StepRecord>> {
    let columns = STEP_COLUMNS
        .split(", ")
        .map(|column| format!("s.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM sw_workflow_steps s JOIN sw_workflow_runs r ON r.run_id = s.run_id \
         WHERE s.step_kind = 'wait' AND s.state != 'completed' \
         AND r.state NOT IN ('completed', 'failed', 'cancelled') \
         AND (?1 IS NULL OR s.run_id = ?1) AND (?2 IS NULL OR r.task_id = ?2) \
         ORDER BY s.created_at, s.step_id LIMIT ?3"
    );
    let limit = filter
        .limit
        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
    all(
        c,
        "list_open_waits",
        &sql,
        params![filter.run_id, filter.task_id, limit],
        rows::step,
    )
}
