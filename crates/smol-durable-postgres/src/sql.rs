//! The store's operations as SQL on one connection (a pooled one, or a transaction's). Every
//! statement binds its values; the only text spliced into SQL is the validated schema name.
//!
//! Hot-path writes are single statements, so each is one round trip and one transaction.
//! Claims, events and heartbeats turn `synchronous_commit` off for their own transaction (a
//! `set_config(…, true)` in a CTE): losing one in a server crash only means the step is claimed
//! again, and WAL order means a durable completion always carries the claims before it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use smol_durable::decide::{admit_attempt, cancel_request, claim_verdict, ClaimVerdict, Closure};
use smol_durable::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimNextTask, ClaimScope, ClaimStep, ClaimedTask,
    CompleteStep, CreatedRun, EventRecord, FailStep, FinishAttempt, InsertStep, LedgerEntry,
    NewChildRun, NewEvent, NewRun, NewStep, OwnerRecord, RenewLeases, RenewOutcome, RunFilter,
    RunOutcome, RunRecord, StartAttempt, State, StepCas, StepRecord, TaskRecord,
};
use smol_durable::{StoreError, StoreErrorKind};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};

use crate::rows::{
    self, attempt_columns, event_columns, ledger_columns, owner_columns, run_columns, step_columns,
    task_columns,
};

type Result<T> = std::result::Result<T, StoreError>;
type PgQuery = Query<'static, Postgres, PgArguments>;

/// SQL text with every `sw_` table qualified by the store's schema, built once per statement.
#[derive(Debug)]
pub(crate) struct Sql {
    schema: String,
    notify_channel: String,
    cache: RwLock<HashMap<&'static str, Arc<str>>>,
}

impl Sql {
    /// `schema` must already be a validated identifier.
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            notify_channel: notify_channel(schema),
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    pub(crate) fn notify_channel(&self) -> &str {
        &self.notify_channel
    }

    fn qualify(&self, text: &str) -> String {
        let prefix = format!("{}.sw_", self.schema);
        text.replace("sw_workflow_", &format!("{prefix}workflow_"))
            .replace("sw_budget_ledger", &format!("{prefix}budget_ledger"))
    }

    /// A query on a static statement.
    fn query(&self, text: &'static str) -> PgQuery {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(text).cloned());
        let sql = match cached {
            Some(sql) => sql,
            None => {
                let sql: Arc<str> = self.qualify(text).into();
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(text, Arc::clone(&sql));
                }
                sql
            }
        };
        sqlx::query(AssertSqlSafe(sql))
    }

    /// A query on a statement assembled at run time (only column lists and placeholders).
    fn dynamic(&self, text: &str) -> PgQuery {
        sqlx::query(AssertSqlSafe(self.qualify(text)))
    }
}

/// The LISTEN/NOTIFY channel of a schema (identifiers are at most 63 bytes).
fn notify_channel(schema: &str) -> String {
    let mut channel = format!("smol_durable_{schema}");
    channel.truncate(63);
    channel
}

/// Maps a driver error raised by `operation` to a [`StoreError`] of the right kind: lost
/// connections, pool timeouts, serialization failures and deadlocks are retryable.
pub(crate) fn map_error(operation: &'static str, error: sqlx::Error) -> StoreError {
    let kind = error_kind(&error);
    let message = if is_nul_in_json(&error) {
        format!(
            "PostgreSQL cannot store the character U+0000 (NUL) in a JSONB document, and this \
             {operation} carries one: {error}"
        )
    } else {
        error.to_string()
    };
    StoreError::new(kind, operation, message).with_source(error)
}

/// `untranslatable_character`: JSONB refuses `\u0000`. Retrying cannot help.
fn is_nul_in_json(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("22P05"))
}

/// The store error kind of a driver error.
pub(crate) fn error_kind(error: &sqlx::Error) -> StoreErrorKind {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreErrorKind::Unavailable,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreErrorKind::Corrupt,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("08") => StoreErrorKind::Unavailable,
            // serialization_failure, deadlock_detected, admin/crash shutdown, cannot connect now,
            // too many connections
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300") => {
                StoreErrorKind::Unavailable
            }
            Some(code) if code.starts_with("23") => StoreErrorKind::Conflict,
            Some("22P05") => StoreErrorKind::Unsupported,
            _ => StoreErrorKind::Other,
        },
        _ => StoreErrorKind::Other,
    }
}

async fn all<T>(
    c: &mut PgConnection,
    op: &'static str,
    query: PgQuery,
    parse: fn(&PgRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = query
        .fetch_all(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    rows.iter().map(parse).collect()
}

async fn one<T>(
    c: &mut PgConnection,
    op: &'static str,
    query: PgQuery,
    parse: fn(&PgRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = query
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    row.as_ref().map(parse).transpose()
}

async fn execute(c: &mut PgConnection, op: &'static str, query: PgQuery) -> Result<u64> {
    Ok(query
        .execute(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?
        .rows_affected())
}

async fn scalar<T>(c: &mut PgConnection, op: &'static str, query: PgQuery) -> Result<T>
where
    T: for<'a> sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
{
    let row = query
        .fetch_one(&mut *c)
        .await
        .map_err(|e| map_error(op, e))?;
    row.try_get::<T, _>(0).map_err(|e| map_error(op, e))
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn not_found(op: &'static str, what: &str, id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        op,
        format!("{what} {id} not found"),
    )
}

fn encode_workflow(
    op: &'static str,
    workflow: &smol_durable::store::WorkflowInfo,
) -> Result<Value> {
    serde_json::to_value(workflow).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Other,
            op,
            format!("cannot encode the workflow description: {error}"),
        )
    })
}

/// Turns `synchronous_commit` off for the current transaction (see the module docs).
pub(crate) async fn relax_commit(c: &mut PgConnection, sql: &Sql, op: &'static str) -> Result<()> {
    execute(
        c,
        op,
        sql.query("SELECT set_config('synchronous_commit', 'off', true)"),
    )
    .await?;
    Ok(())
}

/// Wakes idle workers of this schema when the surrounding transaction commits.
async fn notify_work(c: &mut PgConnection, sql: &Sql, op: &'static str) -> Result<()> {
    execute(
        c,
        op,
        sql.query("SELECT pg_notify($1, 'work')")
            .bind(sql.notify_channel().to_owned()),
    )
    .await?;
    Ok(())
}

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
async fn lock_task(
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

async fn root_run_of_task(
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

async fn step_by_id(
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

pub(crate) async fn budget_spent(
    c: &mut PgConnection,
    sql: &Sql,
    root_run_id: &str,
) -> Result<u64> {
    let spent: i64 = scalar(
        c,
        "budget_spent",
        sql.query(
            "SELECT COALESCE(SUM(output_tokens), 0)::BIGINT FROM sw_budget_ledger WHERE root_run_id = $1",
        )
        .bind(root_run_id),
    )
    .await?;
    Ok(u64::try_from(spent).unwrap_or(0))
}

pub(crate) async fn ledger_entries(
    c: &mut PgConnection,
    sql: &Sql,
    root_run_id: &str,
) -> Result<Vec<LedgerEntry>> {
    const Q: &str = concat!(
        "SELECT ",
        ledger_columns!(),
        " FROM sw_budget_ledger WHERE root_run_id = $1 ORDER BY created_at, budget_entry_id"
    );
    all(
        c,
        "ledger_entries",
        sql.query(Q).bind(root_run_id),
        rows::ledger,
    )
    .await
}

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

pub(crate) async fn get_owner(
    c: &mut PgConnection,
    sql: &Sql,
    owner_id: &str,
) -> Result<Option<OwnerRecord>> {
    const Q: &str = concat!(
        "SELECT ",
        owner_columns!(),
        " FROM sw_workflow_owners WHERE owner_id = $1"
    );
    one(c, "get_owner", sql.query(Q).bind(owner_id), rows::owner).await
}

pub(crate) async fn get_script(
    c: &mut PgConnection,
    sql: &Sql,
    hash: &str,
) -> Result<Option<String>> {
    fn source(row: &PgRow) -> Result<String> {
        row.try_get(0).map_err(|e| map_error("get_script", e))
    }
    one(
        c,
        "get_script",
        sql.query("SELECT source FROM sw_workflow_scripts WHERE script_hash = $1")
            .bind(hash),
        source,
    )
    .await
}

pub(crate) async fn register_owner(
    c: &mut PgConnection,
    sql: &Sql,
    owner: &OwnerRecord,
) -> Result<()> {
    execute(
        c,
        "register_owner",
        sql.query(
            "INSERT INTO sw_workflow_owners (owner_id, process_id, hostname, started_at, heartbeat_at, state) \
             VALUES ($1, $2, $3, $4, $5, 'active') \
             ON CONFLICT (owner_id) DO UPDATE SET process_id = excluded.process_id, \
             hostname = excluded.hostname, heartbeat_at = excluded.heartbeat_at, state = 'active'",
        )
        .bind(&owner.owner_id)
        .bind(i64::from(owner.pid))
        .bind(&owner.hostname)
        .bind(owner.started_at)
        .bind(owner.heartbeat_at),
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_script(
    c: &mut PgConnection,
    sql: &Sql,
    hash: &str,
    source: &str,
    now: i64,
) -> Result<()> {
    execute(
        c,
        "put_script",
        sql.query(
            "INSERT INTO sw_workflow_scripts (script_hash, source, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (script_hash) DO NOTHING",
        )
        .bind(hash)
        .bind(source)
        .bind(now),
    )
    .await?;
    Ok(())
}

async fn task_by_key(
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
    // A concurrent submit with the same key waits on the unique index, then inserts nothing.
    let inserted = execute(
        c,
        op,
        sql.query(
            "INSERT INTO sw_workflow_tasks (task_id, task_name, state, params_json, submitted_by_owner_id, \
             claim_scope, idempotency_scope, idempotency_key, created_at, updated_at, max_attempts) \
             VALUES ($1, 'workflow.run', 'pending', $2, $3, $4, $5, $6, $7, $7, $8) \
             ON CONFLICT (idempotency_scope, idempotency_key) \
             WHERE idempotency_scope IS NOT NULL AND idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(&new.task_id)
        .bind(&new.params)
        .bind(&new.owner_id)
        .bind(scope)
        .bind(new.idempotency_key.as_ref().map(|_| scope))
        .bind(&new.idempotency_key)
        .bind(new.now)
        .bind(i64::from(new.max_attempts.max(1))),
    )
    .await?;
    if inserted == 0 {
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
    }
    execute(
        c,
        op,
        sql.query(
            "INSERT INTO sw_workflow_runs (run_id, task_id, root_run_id, state, workflow_run_json, args_json, \
             budget_total, budget_spent, created_at, updated_at) \
             VALUES ($1, $2, $1, 'pending', $3, $4, $5, 0, $6, $6)",
        )
        .bind(&new.run_id)
        .bind(&new.task_id)
        .bind(&workflow)
        .bind(&new.args)
        .bind(new.budget_total.map(int))
        .bind(new.now),
    )
    .await?;
    if new.claim_scope == ClaimScope::Runner {
        notify_work(c, sql, op).await?;
    }
    let task = get_task(c, sql, &new.task_id)
        .await?
        .ok_or_else(|| not_found(op, "task", &new.task_id))?;
    let run = get_run(c, sql, &new.run_id)
        .await?
        .ok_or_else(|| not_found(op, "run", &new.run_id))?;
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

/// Who opens an attempt, and when.
struct Claimant<'a> {
    attempt_id: &'a str,
    owner: &'a str,
    lease: i64,
    now: i64,
    /// A resume: clears an earlier cancellation request (a plain claim never does).
    revive: bool,
}

/// Claims the (locked) task for the claimant and opens attempt max+1.
async fn open_attempt(
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
    let end = &finish.end;
    let (attempt_state, next_state) = (end.attempt.as_str(), end.run_and_task.as_str());
    let closed = execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_attempts SET state = $2, completed_at = $3, failure_reason_json = $4, \
             lease_expires_at = NULL WHERE attempt_id = $1 AND state = 'running'",
        )
        .bind(&finish.attempt_id)
        .bind(attempt_state)
        .bind(finish.now)
        .bind(&end.reason),
    )
    .await?;
    if closed == 0 {
        return Err(StoreError::new(
            StoreErrorKind::LeaseLost,
            op,
            format!("attempt {} is not running", finish.attempt_id),
        ));
    }
    let spent = budget_spent(c, sql, &finish.run_id).await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_runs SET state = $2, completed_payload_json = $3, failure_reason_json = $4, \
             budget_spent = $5, updated_at = $6 WHERE run_id = $1",
        )
        .bind(&finish.run_id)
        .bind(next_state)
        .bind(&end.payload)
        .bind(&end.reason)
        .bind(int(spent))
        .bind(finish.now),
    )
    .await?;
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_tasks SET state = $2, completed_payload_json = $3, failure_reason_json = $4, \
             lease_expires_at = NULL, not_before = $5, claimed_by_owner_id = NULL, updated_at = $6 \
             WHERE task_id = $1",
        )
        .bind(&finish.task_id)
        .bind(next_state)
        .bind(&end.payload)
        .bind(&end.reason)
        .bind(end.not_before)
        .bind(finish.now),
    )
    .await?;
    // Child runs cannot outlive the attempt that ran them.
    execute(
        c,
        op,
        sql.query(
            "UPDATE sw_workflow_runs SET state = $2, failure_reason_json = $3, updated_at = $4 \
             WHERE root_run_id = $1 AND run_id <> root_run_id AND state IN ('pending', 'running')",
        )
        .bind(&finish.run_id)
        .bind(end.unfinished_children.state.as_str())
        .bind(&end.unfinished_children.reason)
        .bind(finish.now),
    )
    .await?;
    if task.claim_scope == ClaimScope::Runner && end.run_and_task == State::Pending {
        notify_work(c, sql, op).await?;
    }
    Ok(())
}

pub(crate) async fn claim_next_task(
    c: &mut PgConnection,
    sql: &Sql,
    claim: &ClaimNextTask,
) -> Result<Option<ClaimedTask>> {
    let op = "claim_next_task";
    // One statement finds the oldest eligible task (SKIP LOCKED: concurrent workers each take
    // a different one), counts its attempts, and, when it may run again, does all of
    // `open_attempt` for it. A task that must end instead (cancelled while unattended, out of
    // attempts) comes back without an attempt and is closed below. The claim commits without
    // waiting for a flush: the completions that follow it flush it with them.
    //
    // Two rules of the core are spelled in SQL here, for one round trip: the attempts that count
    // (`decide::counts_against_max_attempts`: failed and running ones) and whether the task opens
    // an attempt (`decide::claim_verdict`: no cancellation requested, attempts left). The row
    // returns what both read, the verdict is computed again from it below, and a disagreement is
    // an error; the conformance cases `runner_tasks_stop_after_max_attempts`,
    // `zero_max_attempts_means_one_attempt` and `a_claim_never_clears_a_cancellation_request`
    // pin the two together.
    const Q: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), \
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
           FROM chosen WHERE t.task_id = chosen.task_id), \
         run AS (UPDATE sw_workflow_runs r SET state = 'running', failure_reason_json = NULL, \
           updated_at = $2 FROM chosen WHERE r.run_id = chosen.run_id), \
         attempt AS (INSERT INTO sw_workflow_attempts (attempt_id, run_id, task_id, attempt, \
           worker_id, state, lease_expires_at, started_at) \
           SELECT $5, chosen.run_id, chosen.task_id, \
             (SELECT COALESCE(MAX(a.attempt), 0) + 1 FROM sw_workflow_attempts a \
               WHERE a.task_id = chosen.task_id), \
             $3, 'running', $4, $2 FROM chosen RETURNING *) \
         SELECT found.*, attempt.* FROM ( \
           SELECT task_id AS candidate_task_id, run_id AS candidate_run_id, counted, \
             max_attempts AS candidate_max_attempts, \
             cancel_requested_at IS NOT NULL AS cancelled FROM candidate) AS found \
         LEFT JOIN attempt ON TRUE";
    let abandoned = Closure::abandoned_attempt();
    loop {
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
            return Ok(None);
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
        let max_attempts = u32::try_from(max_attempts).unwrap_or(0);
        match (claim_verdict(cancelled, counted, max_attempts), opened) {
            (ClaimVerdict::Open, Some(_)) => {}
            (ClaimVerdict::Close(closure), None) => {
                // Not claimable: end it, then look for the next task.
                close_task(c, sql, op, &task_id, &closure, claim.now).await?;
                continue;
            }
            (verdict, opened) => {
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    op,
                    format!(
                        "the claim statement and decide::claim_verdict disagree on task \
                         {task_id}: verdict {verdict:?}, attempt opened: {}",
                        opened.is_some()
                    ),
                ))
            }
        }
        let attempt = rows::attempt(&row)?;
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

/// Ends a task nobody will finish (cancelled while unattended, out of attempts): the task, its
/// running attempts and its unfinished runs (root and children) take `state`.
async fn close_task(
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
async fn cas_outcome(
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
struct LedgerColumns {
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
    fn new(entries: &[LedgerEntry]) -> Self {
        Self {
            ids: entries.iter().map(|e| e.budget_entry_id.clone()).collect(),
            run_ids: entries.iter().map(|e| e.run_id.clone()).collect(),
            root_run_ids: entries.iter().map(|e| e.root_run_id.clone()).collect(),
            step_ids: entries.iter().map(|e| e.step_id.clone()).collect(),
            source_types: entries.iter().map(|e| e.source_type.clone()).collect(),
            source_ids: entries.iter().map(|e| e.source_id.clone()).collect(),
            output_tokens: entries.iter().map(|e| int(e.output_tokens)).collect(),
            usages: entries
                .iter()
                .map(|e| e.usage.as_ref().map(Value::to_string))
                .collect(),
            created_at: entries.iter().map(|e| e.created_at).collect(),
        }
    }

    fn bind(self, query: PgQuery) -> PgQuery {
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
    let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
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

pub(crate) async fn delete_task(c: &mut PgConnection, sql: &Sql, task_id: &str) -> Result<bool> {
    let op = "delete_task";
    let Some(task) = lock_task(c, sql, op, task_id).await? else {
        return Ok(false);
    };
    if !task.state.is_terminal() {
        return Err(smol_durable::store::unfinished_task(task_id, &task.state));
    }
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
        return Err(smol_durable::store::unfinished_task(
            task_id,
            &State::parse(&state),
        ));
    }
    for statement in [
        "DELETE FROM sw_workflow_events WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
        "DELETE FROM sw_budget_ledger WHERE run_id IN (SELECT run_id FROM sw_workflow_runs WHERE task_id = $1)",
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
