//! Opening the database a drive and its victims share.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use smol_durable_core::DurableStore;
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_sqlite::SqliteStore;

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
