//! Conformance suite and test doubles for smol-durable.
//!
//! - [`store_conformance_tests!`] expands to one `#[tokio::test]` per store behaviour; every
//!   [`DurableStore`](smol_durable::DurableStore) calls it with a factory of fresh, isolated
//!   stores.
//! - [`engine_conformance_tests!`] runs whole workflows (the scenarios of the runner smol-durable
//!   descends from) on a store through the [`Engine`](smol_durable::Engine).
//! - [`ScriptedEngine`] stands in for JavaScript: a workflow is a Rust async closure making the
//!   same host calls a script would.
//! - [`ScriptedProvider`] answers agent calls with canned outputs, delays and injected failures,
//!   and counts calls; host applications can use it in their own tests.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use smol_durable::{Engine, MemoryStore};
//! use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smol_durable::Error> {
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

mod faults;
mod http_stub;
mod postgres;
mod provider;
mod scripted;
mod sinks;

pub mod scenarios;
pub mod store;

pub use faults::{FaultCounts, FaultPlan, FaultyStore};
pub use http_stub::{StubHttpServer, StubRequest, StubResponse};
pub use postgres::{postgres_test_url, POSTGRES_URL_VAR};
pub use provider::ScriptedProvider;
pub use scripted::{ScriptCtx, ScriptedEngine};
pub use sinks::{RecordingEventSink, RecordingSessionSink, SavedSession};
pub use store::Fixture;

#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// What a conformance factory may return: a fixture, or `None` to skip (the factory has
    /// already said why, loudly; see [`postgres_test_url`](crate::postgres_test_url)).
    pub trait IntoFixture {
        fn into_fixture(self) -> Option<crate::Fixture>;
    }

    impl IntoFixture for crate::Fixture {
        fn into_fixture(self) -> Option<crate::Fixture> {
            Some(self)
        }
    }

    impl IntoFixture for Option<crate::Fixture> {
        fn into_fixture(self) -> Option<crate::Fixture> {
            self
        }
    }
}
