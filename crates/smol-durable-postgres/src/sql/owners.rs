//! Owners and content-addressed scripts.

use super::*;

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
