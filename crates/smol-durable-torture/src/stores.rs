//! Opening the database a drive and its victims share.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use smol_durable_core::DurableStore;
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_sqlite::SqliteStore;
use smol_durable_testkit::{FaultPlan, FaultyStore};

/// Whether `db` names a PostgreSQL server.
pub(crate) fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A SQLite file, or a PostgreSQL schema on a server.
pub(crate) async fn open(db: &str, schema: Option<&str>) -> anyhow::Result<Arc<dyn DurableStore>> {
    if is_postgres(db) {
        let mut options = PostgresOptions::new(db).max_connections(8);
        if let Some(schema) = schema {
            options = options.schema(schema);
        }
        let store = PostgresStore::connect_with(options).await?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(Path::new(db))
        .await
        .with_context(|| format!("cannot open {db}"))?;
    Ok(Arc::new(store))
}

/// [`open`], behind a [`FaultyStore`] failing `fault_rate` of the operations retryably (the
/// seed mixed with the process id, so every process draws its own faults).
pub(crate) async fn open_with_faults(
    db: &str,
    schema: Option<&str>,
    fault_rate: f64,
    seed: u64,
) -> anyhow::Result<Arc<dyn DurableStore>> {
    let store = open(db, schema).await?;
    if fault_rate <= 0.0 {
        return Ok(store);
    }
    let seed = seed ^ u64::from(std::process::id());
    Ok(Arc::new(FaultyStore::new(
        store,
        FaultPlan::retryable(seed, fault_rate),
    )))
}
