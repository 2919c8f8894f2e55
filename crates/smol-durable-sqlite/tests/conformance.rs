//! The whole conformance suite against SQLite: each case gets a fresh database file, and
//! "another handle" is a second `SqliteStore` (own writer thread and connections) on that file.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::PathBuf;
use std::sync::Arc;

use smol_durable_core::DurableStore;
use smol_durable_sqlite::SqliteStore;
use smol_durable_testkit::Fixture;

async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("conformance.db");
    let store: Arc<dyn DurableStore> = Arc::new(SqliteStore::open(&path).await.expect("open"));
    Fixture::new(store, move || {
        let path = path.clone();
        Box::pin(async move {
            let other: Arc<dyn DurableStore> =
                Arc::new(SqliteStore::open(&path).await.expect("open another handle"));
            other
        })
    })
    .holding(dir)
}

smol_durable_testkit::conformance_tests!(super::fresh);
