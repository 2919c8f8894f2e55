//! The conformance suite against the reference in-memory store.

use std::sync::Arc;

use smol_durable::MemoryStore;
use smol_durable_testkit::{FaultPlan, Fixture};

async fn fresh() -> Fixture {
    Fixture::shared(Arc::new(MemoryStore::new()))
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
