//! The store conformance suite: one public async function per behaviour every
//! [`DurableStore`] must have. Invoke them all with
//! [`store_conformance_tests!`](crate::store_conformance_tests).
//!
//! Each case receives a fresh [`Fixture`]: an isolated, empty store plus a way to open another
//! handle on the same data (another connection or process view), so "seen through another
//! handle" is tested for real on stores that have more than one.
//!
//! These functions are test cases: they assert, and a failed assertion panics. They are
//! grouped by theme, each module with its own case list;
//! [`store_conformance_tests!`](crate::store_conformance_tests)
//! only concatenates the lists.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod attempts;
pub mod cancellation;
pub mod events;
pub mod ledger;
pub mod runs;
pub mod signals;
pub mod steps;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use smol_durable_core::decide::{decide_step, sleep_wake_at, StepDecision};
use smol_durable_core::steps::{acquire_step, complete_fenced, Acquired, KnownRow, StepClaim};
use smol_durable_core::store::{
    AttemptOutcome, AttemptStart, CancelRequest, ClaimNextTask, ClaimScope, ClaimStep, CreatedRun,
    EventRecord, EventRow, FailStep, FinishAttempt, InsertStep, LedgerEntry, NewChildRun, NewEvent,
    NewRun, NewStep, OwnerRecord, RecordStep, RenewLeases, RunFilter, RunOutcome, StartAttempt,
    State, StepCas, StepKind, StepLease, WorkflowInfo,
};
use smol_durable_core::{DurableStore, Engine, Error, StepSignature, StoreErrorKind};

type OpenHandle = Arc<dyn Fn() -> BoxFuture<'static, Arc<dyn DurableStore>> + Send + Sync>;

/// A fresh store for one conformance case.
#[derive(Clone)]
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn DurableStore>,
    open_another: OpenHandle,
    _guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .finish()
    }
}

impl Fixture {
    /// A store with a single handle (every "other handle" is the same object).
    pub fn shared(store: Arc<dyn DurableStore>) -> Self {
        let same = Arc::clone(&store);
        Self {
            store,
            open_another: Arc::new(move || {
                let same = Arc::clone(&same);
                Box::pin(async move { same })
            }),
            _guard: None,
        }
    }

    /// A store plus a function opening another handle on the same data.
    pub fn new<F>(store: Arc<dyn DurableStore>, open_another: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Arc<dyn DurableStore>> + Send + Sync + 'static,
    {
        Self {
            store,
            open_another: Arc::new(open_another),
            _guard: None,
        }
    }

    /// Keeps `guard` (a temporary directory, a server process) alive as long as the fixture.
    pub fn holding(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self._guard = Some(Arc::new(guard));
        self
    }

    /// Another handle on the same data.
    pub async fn another_handle(&self) -> Arc<dyn DurableStore> {
        (self.open_another)().await
    }

    /// The same fixture with every handle behind a [`FaultyStore`](crate::FaultyStore)
    /// injecting `plan` (each handle draws its own faults from the plan's seed). With
    /// [`FaultPlan::none`](crate::FaultPlan::none) the whole suite must still pass: the wrapper
    /// itself changes nothing.
    pub fn through_faults(self, plan: crate::FaultPlan) -> Self {
        self.wrapped(move |inner| Arc::new(crate::FaultyStore::new(inner, plan)))
    }

    /// The same fixture with every handle behind the engine's
    /// [`RetryingStore`](smol_durable_core::store::RetryingStore): the store cases must pass through
    /// it unchanged (the engine scenarios always run through it).
    pub fn through_retries(self) -> Self {
        self.wrapped(|inner| {
            Arc::new(smol_durable_core::store::RetryingStore::new(
                inner,
                smol_durable_core::store::StoreRetryPolicy::default(),
            ))
        })
    }

    fn wrapped<W>(self, wrap: W) -> Self
    where
        W: Fn(Arc<dyn DurableStore>) -> Arc<dyn DurableStore> + Send + Sync + 'static,
    {
        let wrap = Arc::new(wrap);
        let store = wrap(self.store);
        let open_inner = self.open_another;
        let open_another: OpenHandle = Arc::new(move || {
            let (open_inner, wrap) = (Arc::clone(&open_inner), Arc::clone(&wrap));
            Box::pin(async move { wrap(open_inner().await) })
        });
        Self {
            store,
            open_another,
            _guard: self._guard,
        }
    }
}

/// Expands to one `#[tokio::test]` per store conformance case. `$factory` is an expression
/// callable with no arguments that returns a future of a fresh [`Fixture`]; attributes after it
/// go on every generated test (e.g. a `cfg_attr(…, ignore)` for a backend that is not always
/// available: its cases are then ignored, never passed).
///
/// ```ignore
/// smol_durable_testkit::store_conformance_tests!(|| async {
///     smol_durable_testkit::Fixture::shared(std::sync::Arc::new(smol_durable_core::MemoryStore::new()))
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__store_steps_cases!($factory, [$(#[$attr])*]);
        $crate::__store_attempts_cases!($factory, [$(#[$attr])*]);
        $crate::__store_cancellation_cases!($factory, [$(#[$attr])*]);
        $crate::__store_events_cases!($factory, [$(#[$attr])*]);
        $crate::__store_runs_cases!($factory, [$(#[$attr])*]);
        $crate::__store_ledger_cases!($factory, [$(#[$attr])*]);
        $crate::__store_signals_cases!($factory, [$(#[$attr])*]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($attrs:tt, $group:ident :: $theme:ident, $factory:expr, $($case:ident),+ $(,)?) => {
        $(
            $crate::__conformance_case!($attrs, $group::$theme, $factory, $case);
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ([$(#[$attr:meta])*], $group:ident :: $theme:ident, $factory:expr, $case:ident) => {
        #[$crate::__private::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $case() {
            let fixture = ($factory)().await;
            $crate::$group::$theme::$case(fixture).await;
        }
    };
}

const OWNER: &str = "owner_conformance";

async fn seed(store: &dyn DurableStore, scope: ClaimScope, now: i64) -> CreatedRun {
    let mut workflow = WorkflowInfo::new();
    workflow.script_path = Some("flows/main.mjs".into());
    workflow.metadata = Some(json!({"name": "conformance", "description": "é ✓"}));
    let mut new = NewRun::new(scope, OWNER, workflow, json!({"n": 1}), now);
    new.budget_total = Some(100);
    new.max_attempts = 3;
    store.create_run(new).await.expect("create_run")
}

async fn start(
    store: &dyn DurableStore,
    created: &CreatedRun,
    owner: &str,
    lease: i64,
    now: i64,
) -> AttemptStart {
    start_taking_over(store, created, owner, None, lease, now).await
}

/// [`start`], taking over from `dead_owner` (known dead) if given.
async fn start_taking_over(
    store: &dyn DurableStore,
    created: &CreatedRun,
    owner: &str,
    dead_owner: Option<&str>,
    lease: i64,
    now: i64,
) -> AttemptStart {
    store
        .start_attempt(StartAttempt {
            attempt_id: smol_durable_core::new_id("attempt"),
            task_id: created.task.task_id.clone(),
            run_id: created.run.run_id.clone(),
            owner_id: owner.to_owned(),
            lease_expires_at: lease,
            take_over_from: dead_owner.map(str::to_owned),
            revive: true,
            now,
        })
        .await
        .expect("start_attempt")
}

async fn finish(
    store: &dyn DurableStore,
    created: &CreatedRun,
    attempt_id: &str,
    owner: &str,
    outcome: AttemptOutcome,
    now: i64,
) -> smol_durable_core::store::StoreResult<()> {
    // Built field by field: some cases finish an attempt under a stale or foreign owner.
    store
        .finish_attempt(FinishAttempt {
            attempt_id: attempt_id.to_owned(),
            task_id: created.task.task_id.clone(),
            run_id: created.run.run_id.clone(),
            owner_id: owner.to_owned(),
            end: smol_durable_core::decide::attempt_end(&outcome),
            now,
        })
        .await
}

fn started(outcome: AttemptStart) -> smol_durable_core::store::AttemptRecord {
    match outcome {
        AttemptStart::Started(attempt) => attempt,
        other => panic!("expected the attempt to start, got {other:?}"),
    }
}

fn signature(prompt: &str) -> StepSignature {
    StepSignature::agent("root", "conformance", prompt, &Value::Null, None, None)
}

fn claim<'a>(
    run_id: &'a str,
    checkpoint: &'a str,
    sig: &'a StepSignature,
    worker: &'a str,
    lease: i64,
) -> StepClaim<'a> {
    StepClaim {
        run_id,
        root_run_id: run_id,
        kind: StepKind::Agent,
        checkpoint_name: checkpoint,
        signature: sig,
        input: json!({"prompt": "hello"}),
        worker_id: worker,
        lease_expires_at: lease,
    }
}

async fn claimed(
    store: &dyn DurableStore,
    run_id: &str,
    checkpoint: &str,
    worker: &str,
    lease: i64,
    now: i64,
) -> smol_durable_core::store::StepRecord {
    let sig = signature("hello");
    match acquire_step(
        store,
        &claim(run_id, checkpoint, &sig, worker, lease),
        KnownRow::Unknown,
        now,
    )
    .await
    {
        Ok(Acquired::Claimed(row)) => row,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn ledger(
    run_id: &str,
    step_id: &str,
    source_type: &str,
    source_id: &str,
    tokens: u64,
) -> LedgerEntry {
    let usage = smol_durable_core::Usage::tokens(0, tokens);
    LedgerEntry::new(
        run_id,
        run_id,
        step_id,
        smol_durable_core::store::LedgerSource::parse(source_type),
        source_id.to_owned(),
        Some(&usage),
        10,
    )
}

pub(crate) fn engine_on(
    fixture: &Fixture,
    scripts: &crate::ScriptedEngine,
    provider: Arc<crate::ScriptedProvider>,
) -> Engine {
    Engine::builder()
        .store(Arc::clone(&fixture.store))
        .script_engine(Arc::new(scripts.clone()))
        .provider(provider)
        .build()
        .expect("engine")
}
