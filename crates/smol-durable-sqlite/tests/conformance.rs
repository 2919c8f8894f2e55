//! The whole conformance suite against SQLite: each case gets a fresh database file, and
//! "another handle" is a second `SqliteStore` (own writer thread and connections) on that file.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::PathBuf;
use std::sync::Arc;

use smol_durable::DurableStore;
use smol_durable_sqlite::SqliteStore;
use smol_durable_testkit::{FaultPlan, Fixture};

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

mod store {
    smol_durable_testkit::store_conformance_tests!(super::fresh);
}

mod engine {
    smol_durable_testkit::engine_conformance_tests!(super::fresh);
}

// The same suite through the fault-injecting wrapper with no faults: the wrapper used by the
// fault-injection scenarios changes nothing by itself.
async fn through_the_fault_wrapper() -> Fixture {
    fresh().await.through_faults(FaultPlan::none())
}

mod store_through_the_fault_wrapper {
    smol_durable_testkit::store_conformance_tests!(super::through_the_fault_wrapper);
}

mod engine_through_the_fault_wrapper {
    smol_durable_testkit::engine_conformance_tests!(super::through_the_fault_wrapper);
}
