//! Conformance suite and test doubles for smol-durable.
//!
//! - [`store_conformance_tests!`] expands to one `#[tokio::test]` per store behaviour; every
//!   [`DurableStore`](smol_durable_core::DurableStore) calls it with a factory of fresh, isolated
//!   stores.
//! - [`engine_conformance_tests!`] runs whole workflows (the scenarios of the runner smol-durable
//!   descends from) on a store through the [`Engine`](smol_durable_core::Engine).
//! - [`conformance_tests!`] is both, also behind the fault-injecting wrapper: one line per
//!   backend.
//! - [`FaultyStore`] fails or delays a seeded fraction of a store's operations (retryable,
//!   terminal, or after the write committed).
//! - [`ScriptedEngine`] stands in for JavaScript: a workflow is a Rust async closure making the
//!   same host calls a script would.
//! - [`ScriptedProvider`] answers agent calls with canned outputs, delays and injected failures,
//!   and counts calls; host applications can use it in their own tests.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use smol_durable_core::{Engine, MemoryStore};
//! use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smol_durable_core::Error> {
//! let scripts = ScriptedEngine::new().workflow("hello.mjs", |ctx| async move {
//!     let greeting = ctx.agent("say hello", json!(null)).await?;
//!     Ok(json!({ "greeting": greeting }))
//! });
//! let provider = Arc::new(ScriptedProvider::new("scripted").with_output("say hello", json!("hi")));
//! let engine = Engine::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .script_engine(Arc::new(scripts.clone()))
//!     .provider(provider.clone())
//!     .build()?;
//! let output = engine.run(scripts.source("hello.mjs"), json!({})).await?;
//! assert_eq!(output.result, json!({ "greeting": "hi" }));
//! assert_eq!(provider.call_count(), 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
// Every store case says which method it checks with a fully qualified link
// (`[`DurableStore::x`](smol_durable_core::DurableStore::x)`), whatever its module imports.
#![allow(rustdoc::redundant_explicit_links)]

mod faults;
mod http_stub;
mod postgres;
mod processes;
mod provider;
mod scripted;
mod sinks;

pub mod scenarios;
pub mod store;

pub use faults::{FaultCounts, FaultPlan, FaultyStore};
pub use http_stub::{StubHttpServer, StubRequest, StubResponse};
pub use postgres::{postgres_test_url, POSTGRES_URL_VAR};
pub use processes::process_group_running;
pub use provider::ScriptedProvider;
pub use scripted::{ScriptCtx, ScriptedEngine};
pub use sinks::{RecordingEventSink, RecordingSessionSink, SavedSession};
pub use store::Fixture;

/// The whole conformance suite for one backend, in one line: the store cases
/// ([`store_conformance_tests!`]) and the engine scenarios ([`engine_conformance_tests!`]), each
/// once on the store as the factory makes it and once behind a [`FaultyStore`] injecting no
/// faults (the wrapper the fault-injection scenarios use must change nothing by itself), and the
/// store cases once more behind the engine's retry wrapper (the scenarios always run behind it).
/// The factory returns a [`Fixture`]. Attributes after it go on every generated test: a backend
/// that is not always available marks its cases ignored instead of letting them pass, as the
/// PostgreSQL store does with `#[cfg_attr(smol_durable_no_postgres, ignore = "…")]` (its build
/// script sets the cfg when no test server is named; see [`postgres_test_url`]).
///
/// ```ignore
/// smol_durable_testkit::conformance_tests!(fresh_fixture);
/// smol_durable_testkit::conformance_tests!(fresh_server_fixture, #[ignore = "needs a server"]);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(, #[$attr:meta])* $(,)?) => {
        mod store {
            $crate::store_conformance_tests!($factory $(, #[$attr])*);
        }

        mod engine {
            $crate::engine_conformance_tests!($factory $(, #[$attr])*);
        }

        mod store_through_the_fault_wrapper {
            $crate::store_conformance_tests!(
                || $crate::__private::through_no_faults($factory)
                $(, #[$attr])*
            );
        }

        mod engine_through_the_fault_wrapper {
            $crate::engine_conformance_tests!(
                || $crate::__private::through_no_faults($factory)
                $(, #[$attr])*
            );
        }

        mod store_through_the_retry_wrapper {
            $crate::store_conformance_tests!(
                || $crate::__private::through_retries($factory)
                $(, #[$attr])*
            );
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// A fixture from `factory`, behind a fault wrapper that injects nothing.
    pub async fn through_no_faults<F, Fut>(factory: F) -> crate::Fixture
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::Fixture>,
    {
        factory().await.through_faults(crate::FaultPlan::none())
    }

    /// A fixture from `factory`, behind the engine's retry wrapper.
    pub async fn through_retries<F, Fut>(factory: F) -> crate::Fixture
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::Fixture>,
    {
        factory().await.through_retries()
    }
}
