//! Events: appended in order, read back.

use super::*;
use smol_durable_core::store::EventRow;

pub(crate) async fn read_events(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM sw_workflow_events WHERE seq > $1 AND (run_id = $2 OR root_run_id = $2) \
         ORDER BY seq LIMIT $3"
    );
    all(
        c,
        "read_events",
        sql.query(Q)
            .bind(after_seq)
            .bind(run_id)
            .bind(int(limit as u64)),
        rows::event,
    )
    .await
}

/// The newest `limit` events of a run and its children, oldest first.
pub(crate) async fn read_newest_events(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    const Q: &str = concat!(
        "SELECT * FROM (SELECT ",
        event_columns!(),
        " FROM sw_workflow_events WHERE run_id = $1 OR root_run_id = $1 \
         ORDER BY seq DESC LIMIT $2) newest ORDER BY seq"
    );
    all(
        c,
        "read_newest_events",
        sql.query(Q).bind(run_id).bind(int(limit as u64)),
        rows::event,
    )
    .await
}

/// An event's row as PostgreSQL can hold it: JSONB cannot hold U+0000, and an event is a log
/// line, so it gets U+FFFD instead.
pub(crate) fn event_row(event: &EventRow) -> EventRow {
    let mut row = event.clone();
    if row.payload.contains("\\u0000") {
        row.payload = row.payload.replace("\\u0000", "\\ufffd");
    }
    row
}

pub(crate) async fn append_events(
    c: &mut PgConnection,
    sql: &Sql,
    events: &[&EventRow],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let text =
        |field: fn(&EventRow) -> &str| -> Vec<&str> { events.iter().map(|e| field(e)).collect() };
    let maybe = |field: fn(&EventRow) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|e| field(e)).collect()
    };
    let times: Vec<i64> = events.iter().map(|e| e.created_at).collect();
    // Ordinality keeps the given order in `seq`; events need no flush of their own.
    execute(
        c,
        "append_events",
        sql.query(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
             INSERT INTO sw_workflow_events (event_id, run_id, root_run_id, attempt_id, step_id, \
             event_type, payload_json, created_at) \
             SELECT e.event_id, e.run_id, e.root_run_id, e.attempt_id, e.step_id, e.event_type, \
             e.payload::JSONB, e.created_at \
             FROM relaxed, unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::TEXT[], $7::TEXT[], $8::BIGINT[]) WITH ORDINALITY \
             AS e(event_id, run_id, root_run_id, attempt_id, step_id, event_type, payload, created_at, n) \
             ORDER BY e.n \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(text(|e| &e.event_id))
        .bind(text(|e| &e.run_id))
        .bind(text(|e| &e.root_run_id))
        .bind(maybe(|e| e.attempt_id.as_deref()))
        .bind(maybe(|e| e.step_id.as_deref()))
        .bind(text(|e| e.event_type))
        .bind(text(|e| &e.payload))
        .bind(times),
    )
    .await?;
    Ok(())
}
