//! Durable execution of JavaScript agent workflows, as one dependency for host applications.
//!
//! Every `agent(...)`, child `workflow(...)` and `sleep(...)` call of a workflow becomes a step
//! persisted in a store. A run that crashes, fails or is stopped resumes by replaying from the
//! top: completed steps return their stored results, so no LLM call is paid for twice.
//!
//! A complete host: its own [`AgentProvider`], a workflow written in JavaScript, the embedded
//! SQLite store and the JavaScript engine on boa (the default features).
//!
//! ```
//! use std::sync::Arc;
//!
//! use smol_durable::boa::BoaEngine;
//! use smol_durable::serde_json::json;
//! use smol_durable::sqlite::SqliteStore;
//! use smol_durable::{
//!     async_trait, AgentProvider, AgentRequest, AgentResponse, Engine, ProviderError,
//!     ResumeOptions, Usage, WorkflowSource,
//! };
//!
//! /// What `agent(...)` calls: a real provider calls a model, a CLI or a service.
//! #[derive(Debug)]
//! struct Shout;
//!
//! #[async_trait]
//! impl AgentProvider for Shout {
//!     fn name(&self) -> &str {
//!         "shout"
//!     }
//!
//!     async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
//!         if request.prompt.is_empty() {
//!             // `transient` errors are retried when the script asks for it, `terminal` ones not.
//!             return Err(ProviderError::terminal("nothing to say"));
//!         }
//!         let words = request.prompt.split_whitespace().count() as u64;
//!         Ok(AgentResponse::new(json!(request.prompt.to_uppercase()))
//!             .with_usage(Usage::tokens(words, words)))
//!     }
//! }
//!
//! /// A workflow: an ES module with top-level `await` (see the JavaScript API in the docs).
//! const GREET: &str = r#"
//! export const meta = { name: "greet", description: "Greets, then writes a line about it" };
//! const hello = await agent(`Say hello to ${args.name}`);
//! const [line, moral] = await parallel([
//!   () => agent(`Write one line about: ${hello}`),
//!   () => agent("Give it a moral"),
//! ]);
//! export default { hello, line, moral, spent: budget.spent() };
//! "#;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Every run, step and ledger row lives in this one file.
//!     let dir = tempfile::tempdir()?;
//!     let store = SqliteStore::open(dir.path().join("runs.db")).await?;
//!     let engine = Engine::builder()
//!         .store(Arc::new(store))
//!         .script_engine(Arc::new(BoaEngine::new()))
//!         .provider(Arc::new(Shout))
//!         .build()?;
//!
//!     let source = WorkflowSource::inline("greet.mjs", GREET);
//!     let output = engine.run(source, json!({ "name": "Ada" })).await?;
//!     println!("run {}: {}", output.run_id, output.result);
//!     assert_eq!(output.result["hello"], json!("SAY HELLO TO ADA"));
//!     assert_eq!(output.token_usage.output_tokens, 16);
//!
//!     // Resuming the finished run replays every step: nothing is called or billed again.
//!     let again = engine.resume(&output.run_id, ResumeOptions::new()).await?;
//!     assert_eq!(again.join().await?.result, output.result);
//!     Ok(())
//! }
//! ```
//!
//! This crate re-exports the core crate ([`smol-durable-core`](smol_durable_core)) at its root —
//! [`Engine`], the [`AgentProvider`], [`ScriptEngine`] and [`DurableStore`] contracts,
//! [`decide`], [`store`], the built-in [`DebugProvider`] and [`CommandProvider`],
//! [`MemoryStore`] — together with [`async_trait`] (implementing the traits needs it) and
//! [`serde_json`] (its `Value` is in the API), and the optional parts below as modules.
//!
//! # Features
//!
//! | feature | default | module | crate | what it adds |
//! | --- | --- | --- | --- | --- |
//! | `sqlite` | yes | `sqlite` | `smol-durable-sqlite` | the embedded SQLite store (`SqliteStore`), SQLite compiled in |
//! | `sqlite-system` | no | `sqlite` | `smol-durable-sqlite` | the same store linked against the system's `libsqlite3` (use it with `default-features = false`, instead of `sqlite`) |
//! | `boa` | yes | `boa` | `smol-durable-boa` | the JavaScript engine on boa 0.22 (`BoaEngine`, and `IsolatedEngine` that runs each script in a child process with CPU and memory limits) |
//! | `postgres` | no | `postgres`, `sqlx` | `smol-durable-postgres` | the PostgreSQL store (`PostgresStore`) for many workers on many machines, and `sqlx` 0.9 (default features off; `postgres`, `runtime-tokio`, `json`), whose `PgPool` the store accepts |
//! | `openai` | no | `openai` | `smol-durable-openai` | `OpenAiProvider`, for any OpenAI-compatible Chat Completions endpoint |
//! | `anthropic` | no | `anthropic` | `smol-durable-anthropic` | `AnthropicProvider`, for Anthropic's Messages API |
//! | `agents` | no | `agents` | `smol-durable-agents` | the coding-agent CLIs as providers: `ClaudeCodeProvider`, `CodexProvider`, `OpencodeProvider`, `PiProvider` |
//! | `full` | no | | | all of the above (with the bundled SQLite) |
//!
//! Without any feature this crate is the core alone: the engine, the contracts, the in-memory
//! store and the built-in providers. A host that wants its own store, script engine or provider
//! implements the trait; `smol-durable-testkit` (a dev-dependency) has the conformance suite a
//! store must pass and test doubles for host applications.
//!
//! # Failures
//!
//! What failed a run comes back typed, whether the script left the rejection uncaught or the
//! run failed on another worker ([`Engine::wait`]); `docs/errors.md` lists every kind and which
//! ones a worker runs again.
//!
//! ```no_run
//! use smol_durable::{Engine, Error, ErrorKind, ProviderErrorKind, WorkflowSource};
//! use smol_durable::serde_json::json;
//!
//! async fn review(engine: &Engine, source: WorkflowSource) {
//!     match engine.run(source, json!({})).await {
//!         Ok(output) => println!("{}", output.result),
//!         Err(failure) => match failure.error() {
//!             Error::Provider(error) if error.kind() == ProviderErrorKind::Terminal => {
//!                 eprintln!("the model refused: {error}")
//!             }
//!             _ if failure.kind() == ErrorKind::BudgetExhausted => {
//!                 eprintln!("resume {:?} with a larger budget", failure.run_id())
//!             }
//!             other => eprintln!("failed ({:?}): {other}", other.kind()),
//!         },
//!     }
//! }
//! ```
#![deny(missing_docs)]

#[doc(inline)]
pub use smol_durable_core::*;

/// Re-exported: the values workflows take and return are [`serde_json::Value`]s.
#[doc(no_inline)]
pub use serde_json;

/// The embedded SQLite store: one file holds every run, step, ledger row and event; databases
/// of smol-workflows 0.3.4 open, migrate and resume (crate `smol-durable-sqlite`, feature
/// `sqlite`, or `sqlite-system` to link the system's SQLite).
///
/// Open one with `SqliteStore::open(path)` and hand it to [`EngineBuilder::store`].
#[cfg(feature = "sqlite-system")]
pub mod sqlite {
    #[doc(inline)]
    pub use smol_durable_sqlite::*;
}

/// The PostgreSQL store: every worker on every machine shares one database, and PostgreSQL is
/// the only coordinator (crate `smol-durable-postgres`, feature `postgres`).
///
/// `PostgresStore::connect_with(PostgresOptions::new(url))` opens its own pool;
/// `PostgresStore::from_pool` shares a host's [`sqlx`] pool.
#[cfg(feature = "postgres")]
pub mod postgres {
    #[doc(inline)]
    pub use smol_durable_postgres::*;
}

/// Re-exported with the `postgres` feature: the PostgreSQL store takes an `sqlx::PgPool`
/// (sqlx 0.9, default features off, with `postgres`, `runtime-tokio` and `json`).
#[cfg(feature = "postgres")]
#[doc(no_inline)]
pub use sqlx;

/// The JavaScript script engine, on boa (crate `smol-durable-boa`, feature `boa`).
///
/// `BoaEngine` runs each script on a thread of the host process; `IsolatedEngine` runs each in
/// a child process with an empty environment and CPU-time and memory limits.
#[cfg(feature = "boa")]
pub mod boa {
    #[doc(inline)]
    pub use smol_durable_boa::*;
}

/// An [`AgentProvider`] for any OpenAI-compatible Chat Completions endpoint (crate
/// `smol-durable-openai`, feature `openai`).
#[cfg(feature = "openai")]
pub mod openai {
    #[doc(inline)]
    pub use smol_durable_openai::*;
}

/// An [`AgentProvider`] for Anthropic's Messages API (crate `smol-durable-anthropic`, feature
/// `anthropic`).
#[cfg(feature = "anthropic")]
pub mod anthropic {
    #[doc(inline)]
    pub use smol_durable_anthropic::*;
}

/// The coding-agent CLIs — Claude Code, Codex, opencode, pi — as [`AgentProvider`]s (crate
/// `smol-durable-agents`, feature `agents`).
#[cfg(feature = "agents")]
pub mod agents {
    #[doc(inline)]
    pub use smol_durable_agents::*;
}

/// The code of README.md, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
