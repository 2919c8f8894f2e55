//! Whole-engine scenarios run on a store: the behaviours of the runner smol-durable descends
//! from, plus the ones SPEC adds. Invoke them all with
//! [`engine_conformance_tests!`](crate::engine_conformance_tests).
//!
//! These functions are test cases: they assert, and a failed assertion panics. They are
//! grouped by theme, each module with its own case list;
//! [`engine_conformance_tests!`](crate::engine_conformance_tests) only concatenates the lists.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod agents;
pub mod basic;
pub mod budget;
pub mod cancel;
pub mod children;
pub mod failures;
pub mod faults;
pub mod fork;
pub mod resume;
pub mod retries;
pub mod runner;
pub mod sessions;
pub mod waits;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable_core::store::{
    AttemptStart, ClaimScope, InsertStep, NewRun, NewStep, OwnerRecord, RunFilter, StartAttempt,
    State, StepKind, WorkflowInfo,
};
use smol_durable_core::{
    AgentResponse, BoxError, DurableStore, Engine, EngineBuilder, Error, EventType, PhaseMeta,
    ProviderErrorKind, ResumeOptions, RunRequest, ScriptError, SessionLogSink, SubmitOptions,
    Usage, WorkerOptions, WorkflowMeta,
};

use crate::{
    FaultPlan, FaultyStore, Fixture, RecordingEventSink, ScriptedEngine, ScriptedProvider,
};

/// Expands to one `#[tokio::test]` per engine scenario, like
/// [`store_conformance_tests!`](crate::store_conformance_tests).
#[macro_export]
macro_rules! engine_conformance_tests {
    ($factory:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__engine_basic_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_agents_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_resume_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_cancel_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_budget_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_children_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_failures_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_faults_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_fork_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_retries_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_runner_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_sessions_cases!($factory, [$(#[$attr])*]);
        $crate::__engine_waits_cases!($factory, [$(#[$attr])*]);
    };
}

fn builder(
    fixture: &Fixture,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> EngineBuilder {
    builder_on(Arc::clone(&fixture.store), scripts, provider)
}

fn builder_on(
    store: Arc<dyn DurableStore>,
    scripts: &ScriptedEngine,
    provider: &Arc<ScriptedProvider>,
) -> EngineBuilder {
    Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::clone(provider) as Arc<dyn smol_durable_core::AgentProvider>)
}

async fn step_states(store: &dyn DurableStore, run_id: &str, kind: StepKind) -> Vec<State> {
    store
        .load_steps(run_id)
        .await
        .expect("load_steps")
        .into_iter()
        .filter(|step| step.kind == kind)
        .map(|step| step.state)
        .collect()
}

async fn states(store: &dyn DurableStore, run_id: &str) -> (State, State, Vec<State>) {
    let run = store.get_run(run_id).await.expect("get_run").expect("run");
    let task = store
        .get_task(&run.task_id)
        .await
        .expect("get_task")
        .expect("task");
    let attempts = store.list_attempts(&run.task_id).await.expect("attempts");
    (
        run.state,
        task.state,
        attempts.into_iter().map(|a| a.state).collect(),
    )
}

async fn only_run(store: &dyn DurableStore) -> String {
    let runs = store.list_runs(&RunFilter::roots()).await.expect("list");
    assert_eq!(runs.len(), 1, "expected exactly one root run");
    runs[0].run_id.clone()
}

/// Starts `main.mjs` and returns once its first agent call has started.
async fn start_until_agent_runs(
    engine: &Engine,
    scripts: &ScriptedEngine,
) -> smol_durable_core::RunHandle {
    let mut handle = engine
        .start(RunRequest::new(scripts.source("main.mjs"), json!({})))
        .await
        .expect("start");
    let mut events = handle.events().expect("events");
    while let Some(event) = events.recv().await {
        if event.event_type == EventType::AgentStarted {
            break;
        }
    }
    handle
}

/// The default limits, with a new agent call's claim deferred for `window` (zero: every call
/// claimed before it runs).
fn deferring_claims(window: Duration) -> smol_durable_core::Limits {
    smol_durable_core::Limits {
        deferred_claim: window,
        ..smol_durable_core::Limits::default()
    }
}

async fn wait_for_steps(
    store: &dyn DurableStore,
    run_id: &str,
    count: usize,
) -> Vec<smol_durable_core::store::StepRecord> {
    for _ in 0..1_000 {
        let steps = store.load_steps(run_id).await.expect("steps");
        if steps.len() >= count {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("run {run_id} never reached {count} steps");
}
