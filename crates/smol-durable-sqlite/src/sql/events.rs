//! Events: appended in order, read back.

use super::*;

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

/// The newest `limit` events of a run and its children, oldest first.
pub(crate) fn read_newest_events(
    c: &Connection,
    run_id: &str,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    let sql = format!(
        "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM sw_workflow_events \
         WHERE run_id = ?1 OR root_run_id = ?1 ORDER BY rowid DESC LIMIT ?2) ORDER BY 1"
    );
    all(
        c,
        "read_newest_events",
        &sql,
        params![run_id, int(limit as u64)],
        rows::event,
    )
}

pub(crate) fn append_events(
    c: &Connection,
    events: &[smol_durable_core::store::EventRow],
) -> Result<()> {
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
                event.payload,
                event.created_at,
            ],
        )?;
    }
    Ok(())
}
