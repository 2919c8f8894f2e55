//! Versioned migrations in `<schema>.sw_migrations(id, introduced_version, applied_time)`.
//!
//! Everything runs in one transaction that first takes a transaction-scoped advisory lock keyed
//! by the schema name, so processes starting at once apply each migration exactly once; the
//! others wait, then find nothing to do. A schema with a migration this binary does not know is
//! refused and left untouched.

use smol_durable_core::StoreError;
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::sql::map_error;

struct Migration {
    id: i64,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        id: 1,
        sql: include_str!("../migrations/1.sql"),
    },
    Migration {
        id: 2,
        sql: include_str!("../migrations/2.sql"),
    },
    Migration {
        id: 3,
        sql: include_str!("../migrations/3.sql"),
    },
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 3;

/// Brings `schema` up to [`SCHEMA_VERSION`]; returns how many migrations ran. `schema` must be a
/// validated identifier.
pub(crate) async fn migrate(pool: &PgPool, schema: &str, now: i64) -> Result<usize, StoreError> {
    let op = "migrate";
    let mut tx = pool.begin().await.map_err(|e| map_error(op, e))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("smol-durable migrate {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(op, e))?;
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!("SET LOCAL search_path TO {schema}"),
        "CREATE TABLE IF NOT EXISTS sw_migrations (id BIGINT PRIMARY KEY, \
         introduced_version TEXT NOT NULL, applied_time BIGINT NOT NULL)"
            .to_owned(),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(op, e))?;
    }
    let applied: Vec<i64> = sqlx::query("SELECT id FROM sw_migrations ORDER BY id")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| map_error(op, e))?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(|e| map_error(op, e))?;
    if let Some(newest) = applied
        .iter()
        .copied()
        .max()
        .filter(|id| *id > SCHEMA_VERSION)
    {
        return Err(smol_durable_core::store::newer_schema(
            &format!("schema {schema}"),
            newest,
            SCHEMA_VERSION,
        ));
    }
    let mut count = 0;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.id)) {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|error| {
                let mapped = map_error(op, error);
                StoreError::new(
                    mapped.kind(),
                    op,
                    format!("migration {} failed: {mapped}", migration.id),
                )
            })?;
        sqlx::query(
            "INSERT INTO sw_migrations (id, introduced_version, applied_time) VALUES ($1, $2, $3)",
        )
        .bind(migration.id)
        .bind(concat!("smol-durable ", env!("CARGO_PKG_VERSION")))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(op, e))?;
        count += 1;
    }
    tx.commit().await.map_err(|e| map_error(op, e))?;
    Ok(count)
}
