//! Durable execution of JavaScript agent workflows.
//!
//! Every `agent(...)`, child `workflow(...)` and `sleep(...)` call of a workflow becomes a step
//! persisted in a [`DurableStore`]. A run that crashes, fails or is stopped resumes by replaying
//! from the top: completed steps return their stored results, so no LLM call is paid for twice.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::{json, Value};
//! use smol_durable_core::{
//!     async_trait, AgentProvider, AgentRequest, AgentResponse, Engine, HostRequest, MemoryStore,
//!     ProviderError, ScriptEngine, ScriptError, ScriptInvocation, Usage, WorkflowMeta,
//!     WorkflowSource,
//! };
//!
//! /// A provider: here it just echoes, a real one calls a model.
//! #[derive(Debug)]
//! struct Echo;
//!
//! #[async_trait]
//! impl AgentProvider for Echo {
//!     fn name(&self) -> &str { "echo" }
//!     async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
//!         Ok(AgentResponse::new(json!(format!("echo: {}", request.prompt)))
//!             .with_usage(Usage::tokens(3, 2)))
//!     }
//! }
//!
//! /// A script engine that runs one fixed workflow written in Rust (the `smol-durable-boa`
//! /// crate runs JavaScript; `smol-durable-testkit` has a reusable scripted engine).
//! #[derive(Debug)]
//! struct TwoAgents;
//!
//! #[async_trait]
//! impl ScriptEngine for TwoAgents {
//!     fn read_metadata(&self, _: &WorkflowSource) -> Result<WorkflowMeta, ScriptError> {
//!         Ok(WorkflowMeta::new("two-agents", "asks twice"))
//!     }
//!     async fn evaluate(&self, run: ScriptInvocation) -> Result<Value, ScriptError> {
//!         let ask = |prompt: &str| run.host.call(HostRequest::Agent {
//!             prompt: prompt.into(),
//!             options: Value::Null,
//!             phase: None,
//!         });
//!         let (a, b) = futures::join!(ask("plan"), ask("write"));
//!         let a = a.map_err(|e| ScriptError::thrown(e.message))?;
//!         let b = b.map_err(|e| ScriptError::thrown(e.message))?;
//!         Ok(json!({ "plan": a, "draft": b }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smol_durable_core::Error> {
//! let engine = Engine::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .script_engine(Arc::new(TwoAgents))
//!     .provider(Arc::new(Echo))
//!     .build()?;
//! let source = WorkflowSource::inline("two.mjs", "export default 1");
//! let output = engine.run(source, json!({})).await?;
//! assert_eq!(output.result, json!({ "plan": "echo: plan", "draft": "echo: write" }));
//! assert_eq!(output.token_usage.output_tokens, 4);
//!
//! // Resuming a completed run replays nothing and returns the stored result.
//! let again = engine.resume(&output.run_id, Default::default()).await?.join().await?;
//! assert_eq!(again.result, output.result);
//! # Ok(())
//! # }
//! ```
//!
//! The layers: [`decide`] holds the algorithm as plain functions; [`DurableStore`] is a set of
//! small atomic operations ([`MemoryStore`] here, SQLite and PostgreSQL in their own crates);
//! [`ScriptEngine`] evaluates scripts and forwards [`HostRequest`]s; [`Engine`] ties them
//! together with leases, heartbeats, cancellation, budget and events.
#![deny(missing_docs)]

pub mod agent_options;
mod clock;
mod command_provider;
mod debug_provider;
pub mod decide;
mod engine;
mod error;
mod events;
mod failure_reason;
pub mod http;
mod ids;
pub mod limits;
pub mod paths;
pub mod process;
mod provider;
mod schema;
mod script;
mod session_dir;
pub mod signals;
mod signature;
pub mod store;
pub mod worktree;

/// Re-exported: implementing [`AgentProvider`], [`ScriptEngine`] or a store needs it, and its
/// version must be this crate's.
pub use async_trait::async_trait;
pub use clock::{rfc3339_ms, sleep_for, Clock, ManualClock, SystemClock};
pub use command_provider::{CommandProvider, EXIT_TEMPORARY_FAILURE};
pub use debug_provider::DebugProvider;
pub use engine::steps;
pub use engine::{
    Divergence, DivergenceReason, Engine, EngineBuilder, ForkOptions, ForkPoint, RecordedStep,
    ReplayCall, ReplayOptions, ReplayReport, ReplayVerdict, ResumeOptions, RunHandle, RunOutput,
    RunRequest, RunStatus, SubmitOptions, SubmittedRun, TokenUsage, Worker, WorkerOptions,
    WorkerReport,
};
pub use error::{
    BoxError, Error, ErrorKind, ErrorStatus, ProviderError, ProviderErrorKind, RunError,
    ScriptError, ScriptErrorKind, StoreError, StoreErrorKind,
};
pub use events::{EventMetadata, EventSink, EventType, SessionLogSink, WorkflowEvent};
pub use ids::new_id;
pub use limits::Limits;
pub use provider::{
    AgentContext, AgentEvent, AgentEvents, AgentProvider, AgentRequest, AgentResponse, Usage,
    UsageCost,
};
pub use script::{
    BudgetSnapshot, CallSite, HostError, HostErrorKind, HostFuture, HostRequest, PhaseMeta,
    ScriptEngine, ScriptInvocation, WorkflowHost, WorkflowMeta, WorkflowSource,
};
pub use session_dir::SessionLogDir;
pub use signals::{OpenWait, SignalOptions, SignalReceipt};
pub use signature::{canonical_json, child_workflow_scope, OccurrenceCounter, StepSignature};
pub use store::{
    AttemptRecord, DurableStore, EventRecord, MemoryStore, RunFilter, RunRecord, RunStart,
    SignalRecord, SignalState, State, StepKind, StepRecord, StoreAdmin, TaskRecord, WaitFilter,
};
