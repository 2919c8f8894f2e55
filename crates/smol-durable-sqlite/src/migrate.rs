//! Versioned migrations in `sw_migrations(id, introduced_version, applied_time)`, compatible with
//! smol-wf (which applied ids 1–3). They run in one transaction, skip what is applied, and
//! refuse a database that has migrations this binary does not know.

use rusqlite::{params, Connection};
use smol_durable_core::StoreError;

use crate::connection::map_error;

struct Migration {
    id: i64,
    introduced_version: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        id: 1,
        introduced_version: "0.1.0",
        sql: include_str!("../migrations/1.sql"),
    },
    Migration {
        id: 2,
        introduced_version: "0.1.0",
        sql: include_str!("../migrations/2.sql"),
    },
    Migration {
        id: 3,
        introduced_version: "0.3.4",
        sql: include_str!("../migrations/3.sql"),
    },
    Migration {
        id: 4,
        introduced_version: concat!("smol-durable ", env!("CARGO_PKG_VERSION")),
        sql: include_str!("../migrations/4.sql"),
    },
    Migration {
        id: 5,
        introduced_version: concat!("smol-durable ", env!("CARGO_PKG_VERSION")),
        sql: include_str!("../migrations/5.sql"),
    },
    Migration {
        id: 6,
        introduced_version: concat!("smol-durable ", env!("CARGO_PKG_VERSION")),
        sql: include_str!("../migrations/6.sql"),
    },
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 6;

/// The last migration smol-wf 0.3.4 applied: a database whose newest migration is this one was
/// last written by smol-wf, which refuses it once smol-durable's migrations are applied.
pub(crate) const SMOL_WF_SCHEMA_VERSION: i64 = 3;

/// The newest migration applied to the database (`None`: no `sw_migrations` table, a new file).
pub(crate) fn applied_version(connection: &Connection) -> Result<Option<i64>, StoreError> {
    let op = "open";
    let has_table: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sw_migrations')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| map_error(op, e))?;
    if !has_table {
        return Ok(None);
    }
    connection
        .query_row("SELECT MAX(id) FROM sw_migrations", [], |row| row.get(0))
        .map_err(|e| map_error(op, e))
}

/// Brings the schema up to [`SCHEMA_VERSION`]; returns how many migrations ran.
pub(crate) fn migrate(connection: &Connection, now: i64) -> Result<usize, StoreError> {
    let op = "migrate";
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| map_error(op, e))?;
    let outcome = apply(connection, now);
    let finished = match &outcome {
        Ok(_) => connection.execute_batch("COMMIT"),
        Err(_) => connection.execute_batch("ROLLBACK"),
    };
    finished.map_err(|e| map_error(op, e))?;
    outcome
}

fn apply(connection: &Connection, now: i64) -> Result<usize, StoreError> {
    let op = "migrate";
    let has_table: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sw_migrations')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| map_error(op, e))?;
    let applied: Vec<i64> = if has_table {
        let mut statement = connection
            .prepare("SELECT id FROM sw_migrations ORDER BY id")
            .map_err(|e| map_error(op, e))?;
        let ids = statement
            .query_map([], |row| row.get(0))
            .map_err(|e| map_error(op, e))?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|e| map_error(op, e))?;
        ids
    } else {
        Vec::new()
    };
    if let Some(newest) = applied
        .iter()
        .copied()
        .max()
        .filter(|id| *id > SCHEMA_VERSION)
    {
        return Err(smol_durable_core::store::newer_schema(
            "the database",
            newest,
            SCHEMA_VERSION,
        ));
    }
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS sw_migrations (
                id INTEGER PRIMARY KEY,
                introduced_version TEXT NOT NULL,
                applied_time INTEGER NOT NULL
            )",
        )
        .map_err(|e| map_error(op, e))?;
    let mut count = 0;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.id)) {
        connection.execute_batch(migration.sql).map_err(|error| {
            let mapped = map_error(op, error);
            StoreError::new(
                mapped.kind(),
                op,
                format!("migration {} failed: {mapped}", migration.id),
            )
        })?;
        connection
            .execute(
                "INSERT INTO sw_migrations (id, introduced_version, applied_time) VALUES (?1, ?2, ?3)",
                params![migration.id, migration.introduced_version, now],
            )
            .map_err(|e| map_error(op, e))?;
        count += 1;
    }
    Ok(count)
}
