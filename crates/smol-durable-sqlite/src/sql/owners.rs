//! Owners and content-addressed scripts.

use super::*;

pub(crate) fn get_owner(c: &Connection, owner_id: &str) -> Result<Option<OwnerRecord>> {
    one(
        c,
        "get_owner",
        "SELECT owner_id, process_id, hostname, started_at, heartbeat_at FROM sw_workflow_owners WHERE owner_id = ?1",
        [owner_id],
        rows::owner,
    )
}

pub(crate) fn get_script(c: &Connection, hash: &str) -> Result<Option<String>> {
    fn source(row: &Row<'_>) -> Result<String> {
        row.get(0).map_err(|e| map_error("get_script", e))
    }
    one(
        c,
        "get_script",
        "SELECT source FROM sw_workflow_scripts WHERE script_hash = ?1",
        [hash],
        source,
    )
}

pub(crate) fn register_owner(c: &Connection, owner: &OwnerRecord) -> Result<()> {
    execute(
        c,
        "register_owner",
        "INSERT INTO sw_workflow_owners (owner_id, process_id, hostname, started_at, heartbeat_at, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'active') \
         ON CONFLICT (owner_id) DO UPDATE SET process_id = excluded.process_id, hostname = excluded.hostname, \
         heartbeat_at = excluded.heartbeat_at, state = 'active'",
        params![owner.owner_id, owner.pid, owner.hostname, owner.started_at, owner.heartbeat_at],
    )?;
    Ok(())
}

pub(crate) fn put_script(c: &Connection, hash: &str, source: &str, now: i64) -> Result<()> {
    execute(
        c,
        "put_script",
        "INSERT INTO sw_workflow_scripts (script_hash, source, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (script_hash) DO NOTHING",
        params![hash, source, now],
    )?;
    Ok(())
}
