//! Steps: insert-if-absent, claims, fenced completion and failure (with their ledger rows),
//! lease renewal.

use super::*;

pub(crate) async fn get_step(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    checkpoint: &str,
) -> Result<Option<StepRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        step_columns!(),
        " FROM sw_workflow_steps WHERE run_id = $1 AND checkpoint_name = $2"
    );
    one(
        c,
        "get_step",
        sql.query(Q).bind(run_id).bind(checkpoint),
        rows::step,
    )
    .await
}

pub(super) async fn step_by_id(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    step_id: &str,
) -> Result<Option<StepRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        step_columns!(),
        " FROM sw_workflow_steps WHERE step_id = $1"
    );
    one(c, op, sql.query(Q).bind(step_id), rows::step).await
}

pub(crate) async fn load_steps(
    c: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Vec<StepRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        step_columns!(),
        " FROM sw_workflow_steps WHERE run_id = $1 ORDER BY created_at, step_id"
    );
    all(c, "load_steps", sql.query(Q).bind(run_id), rows::step).await
}

/// [`load_steps`] and [`budget_spent`] of a root run in one statement: the spend is a
/// one-row aggregate the steps are joined to, so it comes back even when there are none.
pub(crate) async fn load_run_start(
    c: &mut PgConnection,
    sql: &Sql,
    root_run_id: &str,
) -> Result<RunStart> {
    const Q: &str = concat!(
        "SELECT spent.total AS spent_total, ",
        step_columns!(),
        " FROM (SELECT COALESCE(SUM(output_tokens), 0)::BIGINT AS total FROM sw_budget_ledger \
         WHERE root_run_id = $1 AND source_type <> $2) AS spent \
         LEFT JOIN sw_workflow_steps ON run_id = $1 ORDER BY created_at, step_id"
    );
    let op = "load_run_start";
    let rows = sql
        .query(Q)
        .bind(root_run_id)
        .bind(LedgerSource::COPIED_STEP)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    let mut start = RunStart::default();
    for row in &rows {
        let spent: i64 = row.try_get("spent_total").map_err(|e| map_error(op, e))?;
        start.budget_spent = u64::try_from(spent).unwrap_or(0);
        // The one row of a run without steps has none of the step's columns.
        let step_id: Option<String> = row.try_get("step_id").map_err(|e| map_error(op, e))?;
        if step_id.is_some() {
            start.steps.push(rows::step(row)?);
        }
    }
    Ok(start)
}

pub(crate) async fn insert_step(
    c: &mut PgConnection,
    sql: &Sql,
    new: &NewStep,
) -> Result<InsertStep> {
    let op = "insert_step";
    // One statement: the claim commits without waiting for a flush, and RETURNING hands back
    // the new row (nothing on conflict).
    const Q: &str = concat!(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, checkpoint_name, \
         input_signature_hash, input_signature_json, state, input_json, worker_id, lease_expires_at, \
         attempts, last_attempt_at, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10, 1, $11, $11, $11 FROM relaxed \
         ON CONFLICT (run_id, checkpoint_name) DO NOTHING RETURNING ",
        step_columns!()
    );
    let inserted = one(
        c,
        op,
        sql.query(Q)
            .bind(&new.step_id)
            .bind(&new.run_id)
            .bind(&new.root_run_id)
            .bind(new.kind.as_str())
            .bind(&new.checkpoint_name)
            .bind(&new.input_signature_hash)
            .bind(&new.input_signature_json)
            .bind(&new.input)
            .bind(&new.worker_id)
            .bind(new.lease_expires_at)
            .bind(new.now),
        rows::step,
    )
    .await?;
    if let Some(row) = inserted {
        return Ok(InsertStep::Inserted(row));
    }
    let row = get_step(c, sql, &new.run_id, &new.checkpoint_name)
        .await?
        .ok_or_else(|| not_found(op, "step", &new.checkpoint_name))?;
    Ok(InsertStep::Existing(row))
}

/// The outcome of a compare-and-set `UPDATE … RETURNING`: the updated row, or the current one.
pub(super) async fn cas_outcome(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    step_id: &str,
    updated: Option<StepRecord>,
) -> Result<StepCas> {
    match updated {
        Some(row) => Ok(StepCas::Applied(row)),
        None => Ok(StepCas::Conflict(step_by_id(c, sql, op, step_id).await?)),
    }
}

pub(crate) async fn claim_step(
    c: &mut PgConnection,
    sql: &Sql,
    claim: &ClaimStep,
) -> Result<StepCas> {
    let op = "claim_step";
    const Q: &str = concat!(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
         UPDATE sw_workflow_steps SET state = 'running', attempts = attempts + 1, worker_id = $4, \
         lease_expires_at = $5, last_attempt_at = $6, updated_at = $6, failure_reason_json = NULL \
         FROM relaxed WHERE step_id = $1 AND state = $2 AND attempts = $3 RETURNING ",
        step_columns!()
    );
    let updated = one(
        c,
        op,
        sql.query(Q)
            .bind(&claim.step_id)
            .bind(claim.expected_state.as_str())
            .bind(i64::from(claim.expected_fence))
            .bind(&claim.worker_id)
            .bind(claim.lease_expires_at)
            .bind(claim.now),
        rows::step,
    )
    .await?;
    cas_outcome(c, sql, op, &claim.step_id, updated).await
}

/// Ledger rows as parallel arrays for `unnest`, so a completion and its rows are one statement.
pub(super) struct LedgerColumns {
    ids: Vec<String>,
    run_ids: Vec<String>,
    root_run_ids: Vec<String>,
    step_ids: Vec<Option<String>>,
    source_types: Vec<String>,
    source_ids: Vec<String>,
    output_tokens: Vec<i64>,
    usages: Vec<Option<String>>,
    created_at: Vec<i64>,
}

impl LedgerColumns {
    pub(super) fn new(entries: &[LedgerEntry]) -> Self {
        Self {
            ids: entries.iter().map(|e| e.budget_entry_id.clone()).collect(),
            run_ids: entries.iter().map(|e| e.run_id.clone()).collect(),
            root_run_ids: entries.iter().map(|e| e.root_run_id.clone()).collect(),
            step_ids: entries.iter().map(|e| e.step_id.clone()).collect(),
            source_types: entries.iter().map(|e| e.source_type.to_string()).collect(),
            source_ids: entries.iter().map(|e| e.source_id.clone()).collect(),
            output_tokens: entries.iter().map(|e| int(e.output_tokens)).collect(),
            usages: entries
                .iter()
                .map(|e| {
                    e.usage
                        .as_ref()
                        .map(|usage| serde_json::json!(usage).to_string())
                })
                .collect(),
            created_at: entries.iter().map(|e| e.created_at).collect(),
        }
    }

    pub(super) fn bind(self, query: PgQuery) -> PgQuery {
        query
            .bind(self.ids)
            .bind(self.run_ids)
            .bind(self.root_run_ids)
            .bind(self.step_ids)
            .bind(self.source_types)
            .bind(self.source_ids)
            .bind(self.output_tokens)
            .bind(self.usages)
            .bind(self.created_at)
    }
}

/// Inserts the ledger rows bound as `$6…$14` when the CTE `done` produced a row, and notifies
/// `$15` if a waiter asked for it. Completion and failure share the layout `$1` step,
/// `$2` document, `$3` now, `$4` fence, `$5` state.
macro_rules! ledger_insert {
    () => {
        "ledger AS (INSERT INTO sw_budget_ledger (budget_entry_id, run_id, root_run_id, step_id, \
         source_type, source_id, output_tokens, usage_json, created_at) \
         SELECT l.id, l.run_id, l.root_run_id, l.step_id, l.source_type, l.source_id, l.tokens, \
         l.usage::JSONB, l.created_at \
         FROM unnest($6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], \
         $12::BIGINT[], $13::TEXT[], $14::BIGINT[]) \
         AS l(id, run_id, root_run_id, step_id, source_type, source_id, tokens, usage, created_at) \
         WHERE EXISTS (SELECT 1 FROM done) \
         ON CONFLICT (root_run_id, source_type, source_id) DO NOTHING), \
         woken AS (SELECT pg_notify($15, 'step:' || step_id) FROM done WHERE notify_on_finish) "
    };
}

/// The final select of a completion or failure: the row, after the (otherwise unreferenced,
/// hence unevaluated) `woken` CTE ran.
macro_rules! finished_step {
    () => {
        concat!(
            "SELECT ",
            step_columns!(),
            " FROM done, (SELECT COUNT(*) FROM woken) AS woken_count"
        )
    };
}

pub(crate) async fn complete_step(
    c: &mut PgConnection,
    sql: &Sql,
    complete: &CompleteStep,
) -> Result<StepCas> {
    let op = "complete_step";
    // The completion and its ledger rows: one statement, one transaction, one flush.
    const Q: &str = concat!(
        "WITH done AS (UPDATE sw_workflow_steps SET state = $5, result_json = $2, \
         lease_expires_at = NULL, updated_at = $3 \
         WHERE step_id = $1 AND state = 'running' AND attempts = $4 \
         RETURNING *), ",
        ledger_insert!(),
        finished_step!()
    );
    let query = sql
        .query(Q)
        .bind(&complete.step_id)
        .bind(&complete.result)
        .bind(complete.now)
        .bind(i64::from(complete.fence))
        .bind(State::Completed.as_str());
    let query = LedgerColumns::new(&complete.ledger)
        .bind(query)
        .bind(sql.notify_channel().to_owned());
    let updated = one(c, op, query, rows::step).await?;
    cas_outcome(c, sql, op, &complete.step_id, updated).await
}

/// What a record's statement did.
pub(crate) enum Recorded {
    /// The row went in, as [`NewStep::into_completed_row`] builds it from the record (the
    /// caller, who owns the record, builds it instead of copying its documents here).
    Inserted,
    /// Nothing was written: the row under the step's name (or none: the attempt has ended).
    Refused(Option<Box<StepRecord>>),
}

impl Recorded {
    /// The store's answer to `record`.
    pub(crate) fn answer(self, record: RecordStep) -> StepCas {
        match self {
            Self::Inserted => {
                StepCas::Applied(record.step.into_completed_row(record.result, record.now))
            }
            Self::Refused(row) => StepCas::Conflict(row.map(|row| *row)),
        }
    }
}

pub(crate) async fn record_step(
    c: &mut PgConnection,
    sql: &Sql,
    record: &RecordStep,
) -> Result<Recorded> {
    let op = "record_step";
    // The claim and the completion of a call that ended quickly, with its ledger rows, fenced
    // by the attempt still running: one statement, one transaction, one flush. FOR SHARE makes
    // the fence wait for a takeover that is closing the attempt, and read its outcome.
    const Q: &str = concat!(
        "WITH done AS (INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, \
         checkpoint_name, input_signature_hash, input_signature_json, state, input_json, \
         result_json, worker_id, attempts, last_attempt_at, created_at, updated_at) \
         SELECT $1, $16, $17, $18, $19, $20, $21, $5, $22, $2, $23, $4, $24, $24, $3 \
         WHERE EXISTS (SELECT 1 FROM sw_workflow_attempts \
         WHERE attempt_id = $25 AND state = 'running' FOR SHARE) \
         ON CONFLICT (run_id, checkpoint_name) DO NOTHING RETURNING step_id, notify_on_finish), ",
        ledger_insert!(),
        "SELECT 1 FROM done, (SELECT COUNT(*) FROM woken) AS woken_count"
    );
    let new = &record.step;
    // $1–$5 as in a completion (the fence is 1), so the ledger and the notification keep
    // their parameters.
    let query = sql
        .query(Q)
        .bind(&new.step_id)
        .bind(&record.result)
        .bind(record.now)
        .bind(1_i64)
        .bind(State::Completed.as_str());
    let query = LedgerColumns::new(&record.ledger)
        .bind(query)
        .bind(sql.notify_channel().to_owned())
        .bind(&new.run_id)
        .bind(&new.root_run_id)
        .bind(new.kind.as_str())
        .bind(&new.checkpoint_name)
        .bind(&new.input_signature_hash)
        .bind(&new.input_signature_json)
        .bind(&new.input)
        .bind(&new.worker_id)
        .bind(new.now)
        .bind(&record.attempt_id);
    match one(c, op, query, |_| Ok(())).await? {
        // Answered with the row as written, without reading its documents back.
        Some(()) => Ok(Recorded::Inserted),
        None => Ok(Recorded::Refused(
            get_step(c, sql, &new.run_id, &new.checkpoint_name)
                .await?
                .map(Box::new),
        )),
    }
}

pub(crate) async fn fail_step(c: &mut PgConnection, sql: &Sql, fail: &FailStep) -> Result<StepCas> {
    let op = "fail_step";
    const Q: &str = concat!(
        "WITH done AS (UPDATE sw_workflow_steps SET state = $5, failure_reason_json = $2, \
         lease_expires_at = NULL, updated_at = $3 \
         WHERE step_id = $1 AND state = 'running' AND attempts = $4 RETURNING *), ",
        ledger_insert!(),
        finished_step!()
    );
    let query = sql
        .query(Q)
        .bind(&fail.step_id)
        .bind(&fail.reason)
        .bind(fail.now)
        .bind(i64::from(fail.fence))
        .bind(fail.state.as_str());
    let query = LedgerColumns::new(&fail.ledger)
        .bind(query)
        .bind(sql.notify_channel().to_owned());
    let updated = one(c, op, query, rows::step).await?;
    cas_outcome(c, sql, op, &fail.step_id, updated).await
}

/// Asks for a notification when the step finishes; false when it is not running any more.
pub(crate) async fn watch_step(c: &mut PgConnection, sql: &Sql, step_id: &str) -> Result<bool> {
    let changed = execute(
        c,
        "step_finished",
        sql.query(
            "UPDATE sw_workflow_steps SET notify_on_finish = TRUE \
             WHERE step_id = $1 AND state = 'running'",
        )
        .bind(step_id),
    )
    .await?;
    Ok(changed == 1)
}

pub(crate) async fn renew_leases(
    c: &mut PgConnection,
    sql: &Sql,
    renew: &RenewLeases,
) -> Result<RenewOutcome> {
    let op = "renew_leases";
    relax_commit(c, sql, op).await?;
    execute(
        c,
        op,
        sql.query("UPDATE sw_workflow_owners SET heartbeat_at = $2 WHERE owner_id = $1")
            .bind(&renew.owner_id)
            .bind(renew.now),
    )
    .await?;
    let held = execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_tasks SET lease_expires_at = $3 \
             WHERE task_id = $1 AND state = 'running' AND claimed_by_owner_id = $2",
        )
        .bind(&renew.task_id)
        .bind(&renew.owner_id)
        .bind(renew.lease_expires_at),
    )
    .await?
        == 1;
    if held {
        execute(
            c,
            op,
            sql.query(
                "UPDATE sw_workflow_attempts SET lease_expires_at = $2 WHERE attempt_id = $1",
            )
            .bind(&renew.attempt_id)
            .bind(renew.lease_expires_at),
        )
        .await?;
    } else if get_task(c, sql, &renew.task_id).await?.is_none() {
        return Err(not_found(op, "task", &renew.task_id));
    }
    let mut lost_steps = Vec::new();
    if held && !renew.steps.is_empty() {
        // A deposed owner renews nothing: its successor expired those leases on purpose.
        let ids: Vec<String> = renew.steps.iter().map(|s| s.step_id.clone()).collect();
        let fences: Vec<i64> = renew.steps.iter().map(|s| i64::from(s.fence)).collect();
        let leases: Vec<i64> = renew.steps.iter().map(|s| s.lease_expires_at).collect();
        let renewed: Vec<String> = sql
            .query(
                "UPDATE sw_workflow_steps AS s SET lease_expires_at = l.lease \
                 FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS l(step_id, fence, lease) \
                 WHERE s.step_id = l.step_id AND s.state = 'running' AND s.attempts = l.fence \
                 RETURNING s.step_id",
            )
            .bind(ids)
            .bind(fences)
            .bind(leases)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| map_error(op, e))?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| map_error(op, e))?;
        lost_steps.extend(
            renew
                .steps
                .iter()
                .filter(|lease| !renewed.contains(&lease.step_id))
                .map(|lease| lease.step_id.clone()),
        );
    } else {
        lost_steps.extend(renew.steps.iter().map(|lease| lease.step_id.clone()));
    }
    let cancel_requested: bool = scalar(
        c,
        op,
        sql.query(
            "SELECT EXISTS (SELECT 1 FROM sw_workflow_runs WHERE run_id = $1 AND cancel_requested_at IS NOT NULL)",
        )
        .bind(&renew.run_id),
    )
    .await?;
    Ok(RenewOutcome {
        task_held: held,
        lost_steps,
        cancel_requested,
    })
}

/// Inserts ledger rows outside a completion (a fork's copies), as one statement.
pub(super) async fn insert_ledger(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    entries: &[LedgerEntry],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let query = sql.query(
        "INSERT INTO sw_budget_ledger (budget_entry_id, run_id, root_run_id, step_id, source_type, \
         source_id, output_tokens, usage_json, created_at) \
         SELECT l.id, l.run_id, l.root_run_id, l.step_id, l.source_type, l.source_id, l.tokens, \
         l.usage::JSONB, l.created_at \
         FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
         $7::BIGINT[], $8::TEXT[], $9::BIGINT[]) \
         AS l(id, run_id, root_run_id, step_id, source_type, source_id, tokens, usage, created_at) \
         ON CONFLICT (root_run_id, source_type, source_id) DO NOTHING",
    );
    execute(c, op, LedgerColumns::new(entries).bind(query)).await?;
    Ok(())
}

/// Inserts whole step rows as given (a fork's copies), as one statement however many there are.
pub(super) async fn insert_step_rows(
    c: &mut PgConnection,
    sql: &Sql,
    op: &'static str,
    steps: &[StepRecord],
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    fn column<T>(steps: &[StepRecord], value: impl Fn(&StepRecord) -> T) -> Vec<T> {
        steps.iter().map(value).collect()
    }
    let json = |value: &Value| value.to_string();
    let query = sql
        .query(
            "INSERT INTO sw_workflow_steps (step_id, run_id, root_run_id, step_kind, \
             checkpoint_name, input_signature_hash, input_signature_json, state, input_json, \
             result_json, failure_reason_json, worker_id, lease_expires_at, attempts, \
             last_attempt_at, created_at, updated_at) \
             SELECT s.id, s.run_id, s.root_run_id, s.kind, s.checkpoint, s.hash, s.signature, \
             s.state, s.input::JSONB, s.result::JSONB, s.reason::JSONB, s.worker, s.lease, \
             s.fence, s.last_attempt_at, s.created_at, s.updated_at \
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
             $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
             $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[], $17::BIGINT[]) \
             AS s(id, run_id, root_run_id, kind, checkpoint, hash, signature, state, input, \
             result, reason, worker, lease, fence, last_attempt_at, created_at, updated_at)",
        )
        .bind(column(steps, |s| s.step_id.clone()))
        .bind(column(steps, |s| s.run_id.clone()))
        .bind(column(steps, |s| s.root_run_id.clone()))
        .bind(column(steps, |s| s.kind.as_str().to_owned()))
        .bind(column(steps, |s| s.checkpoint_name.clone()))
        .bind(column(steps, |s| s.input_signature_hash.clone()))
        .bind(column(steps, |s| s.input_signature_json.clone()))
        .bind(column(steps, |s| s.state.as_str().to_owned()))
        .bind(column(steps, |s| json(&s.input)))
        .bind(column(steps, |s| s.result.as_ref().map(json)))
        .bind(column(steps, |s| s.failure_reason.as_ref().map(json)))
        .bind(column(steps, |s| s.worker_id.clone()))
        .bind(column(steps, |s| s.lease_expires_at))
        .bind(column(steps, |s| i64::from(s.fence)))
        .bind(column(steps, |s| s.last_attempt_at))
        .bind(column(steps, |s| s.created_at))
        .bind(column(steps, |s| s.updated_at));
    execute(c, op, query).await?;
    Ok(())
}
