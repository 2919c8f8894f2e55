//! Events: appended in order, read back.

use super::*;

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

pub(crate) async fn append_events(
    c: &mut PgConnection,
    sql: &Sql,
    events: &[NewEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let run_ids: Vec<String> = events.iter().map(|e| e.run_id.clone()).collect();
    let roots: Vec<String> = events.iter().map(|e| e.root_run_id.clone()).collect();
    let attempts: Vec<Option<String>> = events.iter().map(|e| e.attempt_id.clone()).collect();
    let steps: Vec<Option<String>> = events.iter().map(|e| e.step_id.clone()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    // JSONB cannot hold U+0000; an event is a log line, so it gets U+FFFD instead.
    let payloads: Vec<String> = events
        .iter()
        .map(|e| e.payload.to_string().replace("\\u0000", "\\ufffd"))
        .collect();
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
        .bind(ids)
        .bind(run_ids)
        .bind(roots)
        .bind(attempts)
        .bind(steps)
        .bind(types)
        .bind(payloads)
        .bind(times),
    )
    .await?;
    Ok(())
}
