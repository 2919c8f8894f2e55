//! The whole conformance suite against PostgreSQL: each case gets its own schema on the test
//! server, and "another handle" is a second `PostgresStore` (its own pool) on that schema.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;

use smol_durable_core::DurableStore;
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_testkit::{postgres_test_url, Fixture};

async fn fresh() -> Fixture {
    let url = postgres_test_url("smol-durable-postgres conformance");
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let options = PostgresOptions::new(url).schema(schema).max_connections(8);
    let store: Arc<dyn DurableStore> = Arc::new(
        PostgresStore::connect_with(options.clone())
            .await
            .expect("connect to the test server"),
    );
    Fixture::new(store, move || {
        let options = options.clone();
        Box::pin(async move {
            let other: Arc<dyn DurableStore> = Arc::new(
                PostgresStore::connect_with(options)
                    .await
                    .expect("open another handle"),
            );
            other
        })
    })
}

// Without a test server this crate is built with `cfg(smol_durable_no_postgres)` (build.rs):
// every case shows up as ignored, never as passed.
smol_durable_testkit::conformance_tests!(
    super::fresh,
    #[cfg_attr(
        smol_durable_no_postgres,
        ignore = "no PostgreSQL test server named: run scripts/test"
    )]
);
