//! The conformance suite against the reference in-memory store.

use std::sync::Arc;

use smol_durable_core::MemoryStore;
use smol_durable_testkit::Fixture;

async fn fresh() -> Fixture {
    Fixture::shared(Arc::new(MemoryStore::new()))
}

smol_durable_testkit::conformance_tests!(super::fresh);
