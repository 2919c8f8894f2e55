//! The store conformance suite: one public async function per behaviour every
//! [`DurableStore`] must have. Invoke them all with [`store_conformance_tests!`](crate::store_conformance_tests).
//!
//! Each case receives a fresh [`Fixture`]: an isolated, empty store plus a way to open another
//! handle on the same data (another connection or process view), so "seen through another
//! handle" is tested for real on stores that have more than one.
//!
//! These functions are test cases: they assert, and a failed assertion panics.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use smol_durable::decide::{decide_step, sleep_wake_at, StepDecision};
use smol_durable::steps::{acquire_step, complete_fenced, Acquired, KnownRow, StepClaim};
use smol_durable::store::{
    AttemptOutcome, AttemptStart, CancelRequest, ClaimNextTask, ClaimScope, ClaimStep, CreatedRun,
    FailStep, FinishAttempt, InsertStep, LedgerEntry, NewChildRun, NewEvent, NewRun, NewStep,
    OwnerRecord, RenewLeases, RunFilter, RunOutcome, StartAttempt, State, StepCas, StepKind,
    StepLease, WorkflowInfo,
};
use smol_durable::{DurableStore, Engine, Error, StepSignature, StoreErrorKind};

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
    /// [`RetryingStore`](smol_durable::store::RetryingStore): the store cases must pass through
    /// it unchanged (the engine scenarios always run through it).
    pub fn through_retries(self) -> Self {
        self.wrapped(|inner| {
            Arc::new(smol_durable::store::RetryingStore::new(
                inner,
                smol_durable::store::StoreRetryPolicy::default(),
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
/// callable with no arguments that returns a future of a fresh [`Fixture`], or of an
/// `Option<Fixture>` whose `None` skips the case (for a backend that is not available here; the
/// factory must say so loudly, and fail in CI: see [`postgres_test_url`](crate::postgres_test_url)).
///
/// ```ignore
/// smol_durable_testkit::store_conformance_tests!(|| async {
///     smol_durable_testkit::Fixture::shared(std::sync::Arc::new(smol_durable::MemoryStore::new()))
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_cases!(
            store,
            $factory,
            single_flight_claim_under_16_claimers,
            expired_lease_is_reclaimed_from_another_handle,
            stale_completion_adopts_the_winner,
            stale_completion_after_reclaim_loses_its_lease,
            concurrent_completions_write_one_ledger_row,
            stored_agent_result_has_no_raw,
            sleep_wake_at_survives_reclaim,
            attempt_numbers_increase_on_resume,
            resume_of_missing_run_gives_the_spec_error,
            cancellation_is_seen_through_another_handle,
            cancelling_a_pending_task_is_immediate,
            local_tasks_are_never_claimed_by_runners,
            budget_sum_equals_ledger_rows,
            events_come_back_in_order_per_run,
            insert_step_is_insert_if_absent,
            claim_step_is_compare_and_set,
            failed_step_is_fenced_and_reclaimable,
            renewal_reports_lost_steps,
            live_task_lease_blocks_other_owners,
            takeover_expires_the_dead_owners_step_leases,
            finishing_an_attempt_is_fenced_by_owner,
            completed_task_is_never_restarted,
            child_runs_are_insert_if_absent,
            scripts_are_content_addressed,
            idempotency_key_returns_the_first_task,
            owners_round_trip,
            list_runs_filters_and_orders,
            cancelling_a_task_whose_owner_is_gone_is_immediate,
            a_claim_never_clears_a_cancellation_request,
            a_deposed_owner_renews_no_step_leases,
            unfinished_children_end_with_their_attempt,
            runner_tasks_stop_after_max_attempts,
            zero_max_attempts_means_one_attempt,
            released_attempts_do_not_use_up_max_attempts,
            text_that_looks_like_sql_is_stored_as_data,
            appending_an_event_again_stores_it_once,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($module:ident, $factory:expr, $($case:ident),+ $(,)?) => {
        $(
            #[$crate::__private::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = ($factory)().await;
                if let Some(fixture) = $crate::__private::IntoFixture::into_fixture(fixture) {
                    $crate::$module::$case(fixture).await;
                }
            }
        )+
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
            attempt_id: smol_durable::new_id("attempt"),
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
) -> smol_durable::store::StoreResult<()> {
    store
        .finish_attempt(FinishAttempt::new(
            attempt_id,
            &created.task.task_id,
            &created.run.run_id,
            owner,
            &outcome,
            now,
        ))
        .await
}

fn started(outcome: AttemptStart) -> smol_durable::store::AttemptRecord {
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
) -> smol_durable::store::StepRecord {
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
    let usage = smol_durable::Usage::tokens(0, tokens);
    LedgerEntry::new(
        run_id,
        run_id,
        step_id,
        source_type,
        source_id.to_owned(),
        Some(&usage),
        10,
    )
}

/// 16 concurrent claimers of one new step: exactly one runs, the rest wait, `attempts = 1`.
pub async fn single_flight_claim_under_16_claimers(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 1).await;
    let run_id = created.run.run_id.clone();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let store = if worker % 2 == 0 {
            Arc::clone(&fixture.store)
        } else {
            fixture.another_handle().await
        };
        let run_id = run_id.clone();
        // Some claimers believe the row is absent (a preloaded view), others read it first.
        let known = if worker % 3 == 0 {
            KnownRow::Absent
        } else {
            KnownRow::Unknown
        };
        tasks.push(tokio::spawn(async move {
            let sig = signature("hello");
            let worker = format!("owner_{worker}");
            acquire_step(
                store.as_ref(),
                &claim(&run_id, "step:shared", &sig, &worker, 10_000),
                known,
                100,
            )
            .await
        }));
    }
    let mut runs = 0;
    let mut waits = 0;
    for task in tasks {
        match task.await.expect("join").expect("acquire") {
            Acquired::Claimed(row) => {
                assert_eq!(row.attempts, 1);
                assert_eq!(row.state, State::Running);
                runs += 1;
            }
            Acquired::Wait(row) => {
                assert_eq!(row.attempts, 1);
                waits += 1;
            }
            Acquired::Replay(value) => panic!("nothing completed, yet replayed {value}"),
        }
    }
    assert_eq!((runs, waits), (1, 15));
    let steps = fixture.store.load_steps(&run_id).await.expect("load_steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].attempts, 1);
}

/// A step whose lease expired is reclaimed by another handle: same step id, `attempts = 2`.
pub async fn expired_lease_is_reclaimed_from_another_handle(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let first = claimed(
        fixture.store.as_ref(),
        run_id,
        "step:lease",
        "owner_1",
        100,
        0,
    )
    .await;
    let sig = signature("hello");
    let waiting = fixture.another_handle().await;
    match acquire_step(
        waiting.as_ref(),
        &claim(run_id, "step:lease", &sig, "owner_2", 200),
        KnownRow::Unknown,
        50,
    )
    .await
    {
        Ok(Acquired::Wait(row)) => assert_eq!(row.lease_expires_at, Some(100)),
        other => panic!("a live lease must make others wait, got {other:?}"),
    }
    let reclaiming = fixture.another_handle().await;
    let second = match acquire_step(
        reclaiming.as_ref(),
        &claim(run_id, "step:lease", &sig, "owner_3", 300),
        KnownRow::Unknown,
        101,
    )
    .await
    {
        Ok(Acquired::Claimed(row)) => row,
        other => panic!("an expired lease must be reclaimed, got {other:?}"),
    };
    assert_eq!(second.step_id, first.step_id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.worker_id.as_deref(), Some("owner_3"));
    assert_eq!(second.lease_expires_at, Some(300));
    let stored = fixture
        .store
        .get_step(run_id, "step:lease")
        .await
        .expect("get_step")
        .expect("row");
    assert_eq!(stored.attempts, 2);
}

/// A worker whose lease was taken over, finishing after the new holder completed, adopts the
/// stored result instead of writing its own.
pub async fn stale_completion_adopts_the_winner(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let stale = claimed(store, run_id, "step:race", "owner_old", 100, 0).await;
    let other = fixture.another_handle().await;
    let winner = claimed(other.as_ref(), run_id, "step:race", "owner_new", 1_000, 150).await;
    assert_eq!(winner.attempts, 2);
    let won = complete_fenced(
        other.as_ref(),
        &winner.step_id,
        2,
        json!({"output": "new"}),
        vec![ledger(
            run_id,
            &winner.step_id,
            "agent_step",
            &winner.step_id,
            5,
        )],
        160,
    )
    .await;
    let won = won.expect("winner completes");
    assert_eq!((won.value, won.adopted), (json!({"output": "new"}), false));
    let late = complete_fenced(
        store,
        &stale.step_id,
        1,
        json!({"output": "old"}),
        vec![ledger(
            run_id,
            &stale.step_id,
            "agent_step",
            &stale.step_id,
            9,
        )],
        170,
    )
    .await;
    let late = late.expect("late finisher adopts");
    assert_eq!((late.value, late.adopted), (json!({"output": "new"}), true));
    let row = store
        .get_step(run_id, "step:race")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.result, Some(json!({"output": "new"})));
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 5);
}

/// A stale worker finishing while the new holder still runs gets `LeaseLost` and writes nothing.
pub async fn stale_completion_after_reclaim_loses_its_lease(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let stale = claimed(store, run_id, "step:race", "owner_old", 100, 0).await;
    let winner = claimed(store, run_id, "step:race", "owner_new", 1_000, 150).await;
    let late = complete_fenced(
        store,
        &stale.step_id,
        stale.attempts,
        json!({"output": "old"}),
        vec![ledger(
            run_id,
            &stale.step_id,
            "agent_step",
            &stale.step_id,
            9,
        )],
        170,
    )
    .await;
    assert!(
        matches!(late, Err(Error::LeaseLost(_))),
        "expected LeaseLost, got {late:?}"
    );
    assert_eq!(store.ledger_entries(run_id).await.expect("ledger").len(), 0);
    let row = store
        .get_step(run_id, "step:race")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.state, State::Running);
    assert_eq!(row.attempts, winner.attempts);
    let done = complete_fenced(
        store,
        &winner.step_id,
        winner.attempts,
        json!({"output": "new"}),
        Vec::new(),
        180,
    )
    .await;
    assert_eq!(done.expect("winner").value, json!({"output": "new"}));
}

/// Four concurrent completions of one step (same fence) write exactly one ledger row, and every
/// caller sees the same stored value.
pub async fn concurrent_completions_write_one_ledger_row(fixture: Fixture) {
    let created = seed(fixture.store.as_ref(), ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.clone();
    let step = claimed(
        fixture.store.as_ref(),
        &run_id,
        "step:complete",
        "owner_0",
        10_000,
        100,
    )
    .await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = fixture.another_handle().await;
        let run_id = run_id.clone();
        let step_id = step.step_id.clone();
        tasks.push(tokio::spawn(async move {
            let entry = ledger(&run_id, &step_id, "agent_step", &step_id, 7);
            complete_fenced(
                store.as_ref(),
                &step_id,
                1,
                json!({"output": format!("done-{worker}")}),
                vec![entry],
                200,
            )
            .await
        }));
    }
    let mut seen = Vec::new();
    let mut writers = 0;
    for task in tasks {
        let completed = task.await.expect("join").expect("completion");
        writers += usize::from(!completed.adopted);
        seen.push(completed.value);
    }
    assert_eq!(
        writers, 1,
        "exactly one completion is written, the others adopt it"
    );
    assert!(
        seen.windows(2).all(|pair| pair[0] == pair[1]),
        "callers saw different values: {seen:?}"
    );
    let entries = fixture.store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].output_tokens, 7);
    assert_eq!(fixture.store.budget_spent(&run_id).await.expect("spent"), 7);
}

/// The engine stores an agent result without the provider's `raw` transcript, keeping
/// `output`, `sessionId`, `model` and `usage`.
pub async fn stored_agent_result_has_no_raw(fixture: Fixture) {
    let scripts = crate::ScriptedEngine::new().workflow("raw.mjs", |ctx| async move {
        Ok(ctx.agent("hello", Value::Null).await?)
    });
    let provider = Arc::new(
        crate::ScriptedProvider::new("scripted").with_usage(smol_durable::Usage::tokens(3, 7)),
    );
    let engine = engine_on(&fixture, &scripts, provider);
    let output = engine
        .run(scripts.source("raw.mjs"), json!({}))
        .await
        .expect("run");
    assert_eq!(output.result, json!("echo: hello"));
    let steps = fixture
        .store
        .load_steps(&output.run_id)
        .await
        .expect("steps");
    assert_eq!(steps.len(), 1);
    let stored = steps[0].result.clone().expect("result");
    assert!(
        stored.get("raw").is_none(),
        "raw must not be stored: {stored}"
    );
    assert_eq!(stored["output"], json!("echo: hello"));
    assert_eq!(stored["sessionId"], json!("session-1"));
    assert_eq!(stored["model"], json!("scripted-model"));
    assert_eq!(stored["usage"]["outputTokens"], json!(7));
}

/// A sleep's `wakeAt` is fixed when its row is created and survives a reclaim.
pub async fn sleep_wake_at_survives_reclaim(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let sig = StepSignature::sleep("root", 1_000);
    let decision = decide_step(None, &StepKind::Sleep, &sig.json, 0).expect("decide");
    assert_eq!(decision, StepDecision::Insert);
    let wake_at = sleep_wake_at(0, 1_000);
    assert_eq!(wake_at, 1_000);
    let inserted = store
        .insert_step(NewStep {
            step_id: smol_durable::new_id("step"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            kind: StepKind::Sleep,
            checkpoint_name: sig.base_checkpoint(),
            input_signature_hash: sig.hash.clone(),
            input_signature_json: sig.json.clone(),
            input: json!({"durationMs": 1_000, "wakeAt": wake_at}),
            worker_id: "owner_1".into(),
            lease_expires_at: 100,
            now: 0,
        })
        .await
        .expect("insert");
    assert!(matches!(inserted, InsertStep::Inserted(_)));
    let other = fixture.another_handle().await;
    let row = other
        .get_step(run_id, &sig.base_checkpoint())
        .await
        .expect("get")
        .expect("row");
    let decision = decide_step(Some(&row), &StepKind::Sleep, &sig.json, 200).expect("decide");
    let StepDecision::Reclaim {
        expected_state: state,
        expected_attempts: attempts,
    } = decision
    else {
        panic!("an expired sleep lease is reclaimed, got {decision:?}")
    };
    assert_eq!(smol_durable::decide::wake_at(&row).ok(), Some(1_000));
    let reclaimed = other
        .claim_step(ClaimStep {
            step_id: row.step_id.clone(),
            expected_state: state,
            expected_attempts: attempts,
            worker_id: "owner_2".into(),
            lease_expires_at: 5_000,
            now: 200,
        })
        .await
        .expect("claim");
    let StepCas::Applied(reclaimed) = reclaimed else {
        panic!("reclaim must apply, got {reclaimed:?}")
    };
    assert_eq!(reclaimed.attempts, 2);
    assert_eq!(reclaimed.input["wakeAt"], json!(1_000));
    let done = complete_fenced(
        other.as_ref(),
        &row.step_id,
        reclaimed.attempts,
        json!({"ok": true, "durationMs": 1_000, "wakeAt": 1_000, "completedAt": 1_001}),
        Vec::new(),
        1_001,
    )
    .await;
    assert!(done.is_ok());
    assert_eq!(
        store.ledger_entries(run_id).await.expect("ledger").len(),
        0,
        "sleeps are never billed"
    );
}

/// Attempt numbers are `max + 1` per task: 1, 2, 3 across resumes.
pub async fn attempt_numbers_increase_on_resume(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let first = started(start(store, &created, OWNER, 100, 0).await);
    assert_eq!(first.attempt, 1);
    finish(
        store,
        &created,
        &first.attempt_id,
        OWNER,
        AttemptOutcome::Failed {
            reason: json!({"message": "boom"}),
            retry_at: None,
        },
        10,
    )
    .await
    .expect("finish");
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.state, State::Failed);
    assert_eq!(run.failure_reason, Some(json!({"message": "boom"})));
    let second = started(start(store, &created, OWNER, 200, 20).await);
    assert_eq!(second.attempt, 2);
    // A third start while the second is still running (its process died) abandons it.
    let third = started(start(store, &created, OWNER, 300, 30).await);
    assert_eq!(third.attempt, 3);
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(attempts[0].state, State::Failed);
    assert_eq!(
        attempts[1].state,
        State::Failed,
        "the abandoned attempt is closed"
    );
    assert_eq!(attempts[2].state, State::Running);
}

/// Resuming an id the store does not have fails with SPEC's exact message.
pub async fn resume_of_missing_run_gives_the_spec_error(fixture: Fixture) {
    let scripts = crate::ScriptedEngine::new();
    let engine = engine_on(
        &fixture,
        &scripts,
        Arc::new(crate::ScriptedProvider::new("scripted")),
    );
    let error = engine
        .resume("run_missing", Default::default())
        .await
        .expect_err("missing run");
    assert_eq!(
        error.to_string(),
        format!(
            "workflow run run_missing was not found in {}; check --db",
            fixture.store.describe()
        )
    );
    assert!(matches!(error, Error::RunNotFound { .. }));
}

/// A cancellation requested through one handle is reported to the owner's heartbeat through
/// another.
pub async fn cancellation_is_seen_through_another_handle(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &created, OWNER, 10_000, 0).await);
    let renew = |now| RenewLeases {
        owner_id: OWNER.into(),
        task_id: created.task.task_id.clone(),
        attempt_id: attempt.attempt_id.clone(),
        run_id: created.run.run_id.clone(),
        lease_expires_at: now + 10_000,
        steps: Vec::new(),
        now,
    };
    let before = store.renew_leases(renew(1)).await.expect("renew");
    assert!(before.task_held);
    assert!(!before.cancel_requested);
    let other = fixture.another_handle().await;
    assert_eq!(
        other
            .request_cancel(&created.run.run_id, 5)
            .await
            .expect("cancel"),
        CancelRequest::Requested
    );
    let after = store.renew_leases(renew(6)).await.expect("renew");
    assert!(after.cancel_requested);
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.cancel_requested_at, Some(5));
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Cancelled {
            reason: json!({"message": "workflow cancelled"}),
        },
        7,
    )
    .await
    .expect("finish");
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Cancelled);
    let attempts = other
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].state, State::Cancelled);
    assert_eq!(
        other
            .request_cancel(&created.run.run_id, 8)
            .await
            .expect("cancel"),
        CancelRequest::AlreadyFinished(State::Cancelled)
    );
    assert_eq!(
        other.request_cancel("run_nope", 8).await.expect("cancel"),
        CancelRequest::NotFound
    );
}

/// Cancelling a task nobody executes yet cancels task and run at once.
pub async fn cancelling_a_pending_task_is_immediate(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Runner, 0).await;
    assert_eq!(
        store
            .request_cancel(&created.run.run_id, 3)
            .await
            .expect("cancel"),
        CancelRequest::CancelledPending
    );
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(
        (run.state, task.state),
        (State::Cancelled, State::Cancelled)
    );
    let claim = store
        .claim_next_task(ClaimNextTask {
            scope: ClaimScope::Runner,
            owner_id: "owner_w".into(),
            attempt_id: smol_durable::new_id("attempt"),
            lease_expires_at: 100,
            now: 4,
        })
        .await
        .expect("claim");
    assert!(claim.is_none(), "a cancelled task is not claimable");
}

/// Runner claims take the oldest eligible `runner` task and never a `local` one.
pub async fn local_tasks_are_never_claimed_by_runners(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let _local = seed(store, ClaimScope::Local, 0).await;
    let older = seed(store, ClaimScope::Runner, 1).await;
    let newer = seed(store, ClaimScope::Runner, 2).await;
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.into(),
        attempt_id: smol_durable::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store
        .claim_next_task(next("owner_a", 10))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(first.task.task_id, older.task.task_id);
    assert_eq!(first.attempt.attempt, 1);
    assert_eq!(first.task.claimed_by_owner_id.as_deref(), Some("owner_a"));
    let other = fixture.another_handle().await;
    let second = other
        .claim_next_task(next("owner_b", 11))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(second.task.task_id, newer.task.task_id);
    assert!(
        store
            .claim_next_task(next("owner_c", 12))
            .await
            .expect("claim")
            .is_none(),
        "local tasks and held tasks are not claimable"
    );
    // Once the first lease expires, its task is claimable again, as attempt 2.
    let reclaimed = store
        .claim_next_task(next("owner_c", 111))
        .await
        .expect("claim")
        .expect("expired task");
    assert_eq!(reclaimed.task.task_id, older.task.task_id);
    assert_eq!(reclaimed.attempt.attempt, 2);
    assert!(store
        .claim_next_task(ClaimNextTask {
            scope: ClaimScope::Local,
            ..next("owner_d", 112)
        })
        .await
        .is_ok());
}

/// The budget is the sum of ledger rows, whatever mix of completions and billed failures wrote them.
pub async fn budget_sum_equals_ledger_rows(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let attempt = started(start(store, &created, OWNER, 1_000, 0).await);
    let a = claimed(store, run_id, "step:a", OWNER, 1_000, 0).await;
    let b = claimed(store, run_id, "step:b", OWNER, 1_000, 0).await;
    complete_fenced(
        store,
        &a.step_id,
        1,
        json!({"output": 1}),
        vec![
            ledger(run_id, &a.step_id, "agent_attempt", "a:1:1", 4),
            ledger(run_id, &a.step_id, "agent_step", &a.step_id, 10),
        ],
        5,
    )
    .await
    .expect("complete");
    let failed = store
        .fail_step(FailStep {
            step_id: b.step_id.clone(),
            fence: 1,
            state: State::Failed,
            reason: json!({"message": "x"}),
            ledger: vec![ledger(run_id, &b.step_id, "agent_attempt", "b:1:1", 6)],
            now: 6,
        })
        .await
        .expect("fail");
    assert!(matches!(failed, StepCas::Applied(_)));
    let entries = store.ledger_entries(run_id).await.expect("ledger");
    assert_eq!(entries.len(), 3);
    let sum: u64 = entries.iter().map(|e| e.output_tokens).sum();
    assert_eq!(sum, 20);
    assert_eq!(store.budget_spent(run_id).await.expect("spent"), 20);
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed {
            result: json!(null),
        },
        7,
    )
    .await
    .expect("finish");
    assert_eq!(
        store
            .get_run(run_id)
            .await
            .expect("get")
            .expect("run")
            .budget_spent,
        20,
        "the cached counter is refreshed from the ledger when the attempt ends"
    );
    assert_eq!(store.budget_spent("run_other").await.expect("spent"), 0);
}

/// Events come back per run in append order, with increasing `seq`, and page by `after_seq`.
pub async fn events_come_back_in_order_per_run(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let one = seed(store, ClaimScope::Local, 0).await;
    let two = seed(store, ClaimScope::Local, 0).await;
    let event = |run: &CreatedRun, n: usize| NewEvent {
        event_id: smol_durable::new_id("evt"),
        run_id: run.run.run_id.clone(),
        root_run_id: run.run.run_id.clone(),
        attempt_id: None,
        step_id: None,
        event_type: "workflow.log".into(),
        payload: json!({"type": "workflow.log", "message": format!("m{n}"), "text": "ünï"}),
        created_at: 5,
    };
    for batch in 0..5 {
        let events = (0..4)
            .map(|i| event(if i % 2 == 0 { &one } else { &two }, batch * 4 + i))
            .collect();
        store.append_events(events).await.expect("append");
    }
    let other = fixture.another_handle().await;
    let read = other
        .read_events(&one.run.run_id, 0, 1_000)
        .await
        .expect("read");
    let messages: Vec<String> = read
        .iter()
        .map(|e| e.payload["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let expected: Vec<String> = (0..20)
        .filter(|n| n % 2 == 0)
        .map(|n| format!("m{n}"))
        .collect();
    assert_eq!(messages, expected);
    assert!(read.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(read[0].payload["text"], json!("ünï"));
    let page = other
        .read_events(&one.run.run_id, read[3].seq, 2)
        .await
        .expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].event_id, read[4].event_id);
}

/// A second insert of the same `(run_id, checkpoint_name)` returns the first row untouched; the
/// signature is stored byte for byte.
pub async fn insert_step_is_insert_if_absent(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let sig = StepSignature::agent(
        "root",
        "p",
        "héllo ✓ \"quoted\"",
        &json!({"z": 1, "a": [1, 2]}),
        Some("φ"),
        None,
    );
    let new = |worker: &str, now| NewStep {
        step_id: smol_durable::new_id("step"),
        run_id: run_id.clone(),
        root_run_id: run_id.clone(),
        kind: StepKind::Agent,
        checkpoint_name: sig.base_checkpoint(),
        input_signature_hash: sig.hash.clone(),
        input_signature_json: sig.json.clone(),
        input: json!({"prompt": "héllo"}),
        worker_id: worker.into(),
        lease_expires_at: now + 100,
        now,
    };
    let InsertStep::Inserted(first) = store.insert_step(new("owner_1", 1)).await.expect("insert")
    else {
        panic!("first insert inserts")
    };
    let InsertStep::Existing(second) = store.insert_step(new("owner_2", 2)).await.expect("insert")
    else {
        panic!("second insert finds the first")
    };
    assert_eq!(second, first);
    assert_eq!(first.input_signature_json, sig.json);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.state, State::Running);
    let other = fixture.another_handle().await;
    let loaded = other.load_steps(run_id).await.expect("load");
    assert_eq!(loaded, vec![first]);
}

/// `claim_step` writes only when state and attempts both match.
pub async fn claim_step_is_compare_and_set(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let row = claimed(store, &created.run.run_id, "step:cas", "owner_1", 100, 0).await;
    let attempt = |state: State, attempts| ClaimStep {
        step_id: row.step_id.clone(),
        expected_state: state,
        expected_attempts: attempts,
        worker_id: "owner_2".into(),
        lease_expires_at: 500,
        now: 200,
    };
    assert!(matches!(
        store
            .claim_step(attempt(State::Running, 2))
            .await
            .expect("cas"),
        StepCas::Conflict(Some(_))
    ));
    assert!(matches!(
        store
            .claim_step(attempt(State::Failed, 1))
            .await
            .expect("cas"),
        StepCas::Conflict(Some(_))
    ));
    let StepCas::Applied(now_ours) = store
        .claim_step(attempt(State::Running, 1))
        .await
        .expect("cas")
    else {
        panic!("matching CAS applies")
    };
    assert_eq!(now_ours.attempts, 2);
    assert!(
        matches!(
            store
                .claim_step(attempt(State::Running, 1))
                .await
                .expect("cas"),
            StepCas::Conflict(Some(_))
        ),
        "the same CAS twice applies once"
    );
    let missing = store
        .claim_step(ClaimStep {
            step_id: "step_missing".into(),
            ..attempt(State::Running, 1)
        })
        .await;
    match missing {
        Err(error) => assert_eq!(error.kind(), StoreErrorKind::NotFound),
        Ok(StepCas::Conflict(None)) => {}
        Ok(other) => panic!("a missing step cannot be claimed: {other:?}"),
    }
}

/// Failing a step needs the fence; a failed step is reclaimed by the next claimer.
pub async fn failed_step_is_fenced_and_reclaimable(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let row = claimed(store, run_id, "step:fail", "owner_1", 10_000, 0).await;
    let fail = |fence| FailStep {
        step_id: row.step_id.clone(),
        fence,
        state: State::Failed,
        reason: json!({"message": "nope"}),
        ledger: Vec::new(),
        now: 5,
    };
    assert!(matches!(
        store.fail_step(fail(7)).await.expect("fail"),
        StepCas::Conflict(_)
    ));
    let StepCas::Applied(failed) = store.fail_step(fail(1)).await.expect("fail") else {
        panic!("fenced fail applies")
    };
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.failure_reason, Some(json!({"message": "nope"})));
    // Failed is reclaimable at once even though the old lease had not expired.
    let again = claimed(store, run_id, "step:fail", "owner_2", 20_000, 6).await;
    assert_eq!(again.attempts, 2);
    assert_eq!(again.failure_reason, None);
}

/// Renewal extends held step leases and reports the steps whose fence moved on.
pub async fn renewal_reports_lost_steps(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let attempt = started(start(store, &created, OWNER, 100, 0).await);
    let kept = claimed(store, run_id, "step:kept", OWNER, 100, 0).await;
    let lost = claimed(store, run_id, "step:lost", OWNER, 100, 0).await;
    let _thief = claimed(store, run_id, "step:lost", "owner_thief", 1_000, 150).await;
    let outcome = store
        .renew_leases(RenewLeases {
            owner_id: OWNER.into(),
            task_id: created.task.task_id.clone(),
            attempt_id: attempt.attempt_id.clone(),
            run_id: run_id.clone(),
            lease_expires_at: 400,
            steps: vec![
                StepLease {
                    step_id: kept.step_id.clone(),
                    fence: 1,
                    lease_expires_at: 400,
                },
                StepLease {
                    step_id: lost.step_id.clone(),
                    fence: 1,
                    lease_expires_at: 400,
                },
            ],
            now: 160,
        })
        .await
        .expect("renew");
    assert!(outcome.task_held);
    assert_eq!(outcome.lost_steps, vec![lost.step_id.clone()]);
    let kept_row = store
        .get_step(run_id, "step:kept")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(kept_row.lease_expires_at, Some(400));
    let lost_row = store
        .get_step(run_id, "step:lost")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        lost_row.lease_expires_at,
        Some(1_000),
        "a lost step's lease is not touched"
    );
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.lease_expires_at, Some(400));
}

/// A live task lease keeps other owners out until it expires.
pub async fn live_task_lease_blocks_other_owners(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    started(start(store, &created, "owner_a", 100, 0).await);
    let other = fixture.another_handle().await;
    match start(other.as_ref(), &created, "owner_b", 300, 50).await {
        AttemptStart::Busy {
            owner_id,
            lease_expires_at,
        } => {
            assert_eq!(owner_id, "owner_a");
            assert_eq!(lease_expires_at, 100);
        }
        outcome => panic!("a live lease must block, got {outcome:?}"),
    }
    let second = started(start(other.as_ref(), &created, "owner_b", 300, 100).await);
    assert_eq!(second.attempt, 2);
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.claimed_by_owner_id.as_deref(), Some("owner_b"));
    assert_eq!(
        task.submitted_by_owner_id.as_deref(),
        Some("owner_b"),
        "a local task is adopted by its resumer"
    );
}

/// Taking over from a dead owner is immediate and makes its running steps reclaimable at once.
pub async fn takeover_expires_the_dead_owners_step_leases(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    started(start(store, &created, "owner_dead", 60_000, 0).await);
    let held = claimed(store, run_id, "step:held", "owner_dead", 60_000, 0).await;
    let takeover = start_taking_over(
        store,
        &created,
        "owner_new",
        Some("owner_dead"),
        61_000,
        1_000,
    )
    .await;
    let attempt = started(takeover);
    assert_eq!(attempt.attempt, 2);
    let again = claimed(store, run_id, "step:held", "owner_new", 61_000, 1_000).await;
    assert_eq!(again.step_id, held.step_id);
    assert_eq!(again.attempts, 2);
}

/// Finishing an attempt after another owner took the task over fails with `LeaseLost`.
pub async fn finishing_an_attempt_is_fenced_by_owner(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let first = started(start(store, &created, "owner_a", 100, 0).await);
    started(start(store, &created, "owner_b", 500, 200).await);
    let late = finish(
        store,
        &created,
        &first.attempt_id,
        "owner_a",
        AttemptOutcome::Completed {
            result: json!("late"),
        },
        210,
    )
    .await;
    match late {
        Err(error) => assert_eq!(error.kind(), StoreErrorKind::LeaseLost),
        Ok(()) => panic!("a stale owner must not finish the attempt"),
    }
    let run = store
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.state, State::Running);
    assert_eq!(run.completed_payload, None);
}

/// A completed task never starts again; failed/cancelled ones only when reviving.
pub async fn completed_task_is_never_restarted(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &created, OWNER, 100, 0).await);
    finish(
        store,
        &created,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed {
            result: json!({"ok": true}),
        },
        5,
    )
    .await
    .expect("finish");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Completed);
    assert_eq!(task.completed_payload, Some(json!({"ok": true})));
    assert!(matches!(
        start(store, &created, OWNER, 200, 10).await,
        AttemptStart::Finished(State::Completed)
    ));
    let failed = seed(store, ClaimScope::Local, 0).await;
    let attempt = started(start(store, &failed, OWNER, 100, 0).await);
    finish(
        store,
        &failed,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Failed {
            reason: json!({"message": "x"}),
            retry_at: None,
        },
        5,
    )
    .await
    .expect("finish");
    let no_revive = store
        .start_attempt(StartAttempt {
            attempt_id: smol_durable::new_id("attempt"),
            task_id: failed.task.task_id.clone(),
            run_id: failed.run.run_id.clone(),
            owner_id: OWNER.into(),
            lease_expires_at: 100,
            take_over_from: None,
            revive: false,
            now: 6,
        })
        .await
        .expect("start");
    assert!(matches!(no_revive, AttemptStart::Finished(State::Failed)));
}

/// Child runs: insert-if-absent by id, share the root's task, excluded from root listings.
pub async fn child_runs_are_insert_if_absent(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let child = |now| NewChildRun {
        run_id: "run_child_fixed".into(),
        task_id: created.task.task_id.clone(),
        root_run_id: created.run.run_id.clone(),
        parent_run_id: created.run.run_id.clone(),
        parent_step_id: "step_parent".into(),
        workflow: WorkflowInfo::new(),
        args: json!({"x": 1}),
        now,
    };
    let first = store.create_child_run(child(1)).await.expect("child");
    assert_eq!(first.state, State::Running);
    assert_eq!(first.root_run_id, created.run.run_id);
    store
        .finish_child_run(
            "run_child_fixed",
            RunOutcome::Failed(json!({"message": "x"})),
            2,
        )
        .await
        .expect("finish");
    let again = store.create_child_run(child(3)).await.expect("child again");
    assert_eq!(again.created_at, 1);
    assert_eq!(
        again.state,
        State::Running,
        "a failed child restarts when its step is reclaimed"
    );
    store
        .finish_child_run("run_child_fixed", RunOutcome::Completed(json!(42)), 4)
        .await
        .expect("finish");
    let done = store.create_child_run(child(5)).await.expect("child");
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.completed_payload, Some(json!(42)));
    let roots = store.list_runs(&RunFilter::roots()).await.expect("list");
    assert_eq!(roots.len(), 1);
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2);
}

/// Scripts are stored by content hash, once.
pub async fn scripts_are_content_addressed(fixture: Fixture) {
    let store = fixture.store.as_ref();
    store
        .put_script("h1", "export default 'ü'")
        .await
        .expect("put");
    store
        .put_script("h1", "export default 'ü'")
        .await
        .expect("put twice");
    let other = fixture.another_handle().await;
    assert_eq!(
        other.get_script("h1").await.expect("get").as_deref(),
        Some("export default 'ü'")
    );
    assert_eq!(other.get_script("h2").await.expect("get"), None);
}

/// Values are bound, never spliced into SQL: text made of SQL syntax (quotes, comments,
/// statement separators, `LIKE` wildcards) in every user-controlled field round-trips as data,
/// matches nothing it should not, and every table is still there afterwards.
pub async fn text_that_looks_like_sql_is_stored_as_data(fixture: Fixture) {
    const HOSTILE: &str = "x'); DROP TABLE sw_workflow_runs; -- \" \\ %_ */ /* $1 ?1 ::jsonb ✓";
    let store = fixture.store.as_ref();
    let mut workflow = WorkflowInfo::new();
    workflow.script_path = Some(format!("flows/{HOSTILE}.mjs"));
    workflow.metadata = Some(json!({ "name": HOSTILE, "description": HOSTILE }));
    let mut new = NewRun::new(
        ClaimScope::Runner,
        OWNER,
        workflow,
        json!({ HOSTILE: HOSTILE }),
        0,
    );
    new.idempotency_key = Some(HOSTILE.to_owned());
    let created = store.create_run(new).await.expect("create_run");
    let run_id = created.run.run_id.clone();
    let sig = StepSignature::agent(
        "root",
        "p",
        HOSTILE,
        &json!({ HOSTILE: 1 }),
        Some(HOSTILE),
        None,
    );
    let inserted = store
        .insert_step(NewStep {
            step_id: smol_durable::new_id("step"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: format!("{HOSTILE}:{}", sig.base_checkpoint()),
            input_signature_hash: sig.hash.clone(),
            input_signature_json: sig.json.clone(),
            input: json!({ "prompt": HOSTILE }),
            worker_id: HOSTILE.to_owned(),
            lease_expires_at: 100,
            now: 1,
        })
        .await
        .expect("insert_step");
    let InsertStep::Inserted(step) = inserted else {
        panic!("a fresh checkpoint inserts")
    };
    store
        .put_script(HOSTILE, HOSTILE)
        .await
        .expect("put_script");
    store
        .append_events(vec![NewEvent {
            event_id: smol_durable::new_id("evt"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            attempt_id: None,
            step_id: None,
            event_type: HOSTILE.to_owned(),
            payload: json!({ HOSTILE: HOSTILE }),
            created_at: 2,
        }])
        .await
        .expect("append_events");

    let other = fixture.another_handle().await;
    let run = other
        .get_run(&run_id)
        .await
        .expect("get_run")
        .expect("the run");
    assert_eq!(run.args, json!({ HOSTILE: HOSTILE }));
    assert_eq!(
        run.workflow.script_path.as_deref(),
        Some(format!("flows/{HOSTILE}.mjs").as_str())
    );
    assert_eq!(
        run.workflow.metadata,
        Some(json!({ "name": HOSTILE, "description": HOSTILE }))
    );
    let found = other
        .get_step(&run_id, &step.checkpoint_name)
        .await
        .expect("get_step")
        .expect("the step");
    assert_eq!(found.input, json!({ "prompt": HOSTILE }));
    assert_eq!(found.worker_id.as_deref(), Some(HOSTILE));
    assert_eq!(found.input_signature_json, sig.json);
    assert_eq!(
        other
            .get_script(HOSTILE)
            .await
            .expect("get_script")
            .as_deref(),
        Some(HOSTILE)
    );
    let events = other
        .read_events(&run_id, 0, 10)
        .await
        .expect("read_events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, HOSTILE);
    assert_eq!(events[0].payload, json!({ HOSTILE: HOSTILE }));
    // `LIKE` wildcards in a name filter match literally.
    let mut named = RunFilter::roots();
    named.name_contains = Some("%_".to_owned());
    assert_eq!(other.list_runs(&named).await.expect("list").len(), 1);
    named.name_contains = Some("%x%_%".to_owned());
    assert!(other.list_runs(&named).await.expect("list").is_empty());
    // The same key finds the same task; the tables are all still there.
    let again = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 3);
    let again = NewRun {
        idempotency_key: Some(HOSTILE.to_owned()),
        ..again
    };
    let second = other.create_run(again).await.expect("create_run again");
    assert!(!second.created);
    assert_eq!(second.task.task_id, created.task.task_id);
    assert_eq!(
        other
            .list_runs(&RunFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Appending is idempotent by event id, so a retried append whose answer was lost adds
/// nothing: the events already stored are skipped, new ones in the same batch are kept.
pub async fn appending_an_event_again_stores_it_once(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.clone();
    let event = |n: i64| NewEvent {
        event_id: smol_durable::new_id("evt"),
        run_id: run_id.clone(),
        root_run_id: run_id.clone(),
        attempt_id: None,
        step_id: None,
        event_type: "workflow.log".to_owned(),
        payload: json!({ "n": n }),
        created_at: n,
    };
    let (first, second, third) = (event(1), event(2), event(3));
    let batch = vec![first.clone(), second.clone()];
    store.append_events(batch.clone()).await.expect("append");
    store.append_events(batch).await.expect("append again");
    store
        .append_events(vec![second, third])
        .await
        .expect("append one old, one new");
    let other = fixture.another_handle().await;
    let stored = other.read_events(&run_id, 0, 10).await.expect("read");
    let numbers: Vec<&Value> = stored.iter().map(|event| &event.payload["n"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(stored[0].event_id, first.event_id);
}

/// Creating a task with an idempotency key already used in the scope returns the first task.
pub async fn idempotency_key_returns_the_first_task(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let new = |now| {
        let mut run = NewRun::new(
            ClaimScope::Runner,
            OWNER,
            WorkflowInfo::new(),
            json!({}),
            now,
        );
        run.idempotency_key = Some("key-1".into());
        run
    };
    let first = store.create_run(new(1)).await.expect("create");
    assert!(first.created);
    let second = store.create_run(new(2)).await.expect("create again");
    assert!(!second.created);
    assert_eq!(second.task.task_id, first.task.task_id);
    assert_eq!(second.run.run_id, first.run.run_id);
}

/// Owner identities round-trip.
pub async fn owners_round_trip(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let owner = OwnerRecord::this_process("owner_rt".into(), 42);
    store.register_owner(owner.clone()).await.expect("register");
    let other = fixture.another_handle().await;
    assert_eq!(other.get_owner("owner_rt").await.expect("get"), Some(owner));
    assert_eq!(other.get_owner("owner_none").await.expect("get"), None);
}

/// Listing filters by state, task, name (ASCII case ignored) and creation time (bounds
/// included) and returns newest first.
pub async fn list_runs_filters_and_orders(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let old = seed(store, ClaimScope::Local, 1).await;
    let new = seed(store, ClaimScope::Local, 2).await;
    let attempt = started(start(store, &old, OWNER, 100, 3).await);
    finish(
        store,
        &old,
        &attempt.attempt_id,
        OWNER,
        AttemptOutcome::Completed { result: json!(1) },
        4,
    )
    .await
    .expect("finish");
    let all = store.list_runs(&RunFilter::roots()).await.expect("list");
    let ids: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, vec![new.run.run_id.as_str(), old.run.run_id.as_str()]);
    let mut completed = RunFilter::roots();
    completed.states = vec![State::Completed];
    assert_eq!(store.list_runs(&completed).await.expect("list").len(), 1);
    let mut named = RunFilter::roots();
    named.name_contains = Some("conform".into());
    named.limit = Some(1);
    let limited = store.list_runs(&named).await.expect("list");
    assert_eq!(limited.len(), 1);
    assert_eq!(
        limited[0]
            .workflow
            .metadata
            .as_ref()
            .map(|m| m["description"].clone()),
        Some(json!("é ✓"))
    );
    named.name_contains = Some("nothing".into());
    assert!(store.list_runs(&named).await.expect("list").is_empty());
    named.name_contains = Some("CONFORM".into());
    named.limit = None;
    assert_eq!(
        store.list_runs(&named).await.expect("list").len(),
        2,
        "names match whatever the case of ASCII letters"
    );
    // Creation bounds are inclusive: `old` was created at 1, `new` at 2.
    let mut created = RunFilter::roots();
    created.created_from = Some(2);
    let ids = |runs: Vec<smol_durable::store::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|run| run.run_id).collect()
    };
    assert_eq!(
        ids(store.list_runs(&created).await.expect("list")),
        vec![new.run.run_id.clone()]
    );
    created.created_from = Some(1);
    created.created_until = Some(1);
    assert_eq!(
        ids(store.list_runs(&created).await.expect("list")),
        vec![old.run.run_id.clone()]
    );
    created.created_from = Some(3);
    created.created_until = None;
    assert!(store.list_runs(&created).await.expect("list").is_empty());
    let mut of_task = RunFilter::roots();
    of_task.task_id = Some(old.task.task_id.clone());
    of_task.states = vec![State::Completed];
    let found = store.list_runs(&of_task).await.expect("list");
    let ids: Vec<&str> = found.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, vec![old.run.run_id.as_str()], "filters combine");
    of_task.states = vec![State::Pending];
    assert!(store.list_runs(&of_task).await.expect("list").is_empty());
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

/// A running task whose lease expired has nobody to notice a cancellation: it is cancelled at
/// once, with its attempt.
pub async fn cancelling_a_task_whose_owner_is_gone_is_immediate(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    started(start(store, &created, "owner_gone", 100, 0).await);
    let outcome = store
        .request_cancel(&created.run.run_id, 200)
        .await
        .expect("cancel");
    assert_eq!(outcome, CancelRequest::CancelledPending);
    let (run, task) = (
        store
            .get_run(&created.run.run_id)
            .await
            .expect("get")
            .expect("run"),
        store
            .get_task(&created.task.task_id)
            .await
            .expect("get")
            .expect("task"),
    );
    assert_eq!(
        (run.state, task.state),
        (State::Cancelled, State::Cancelled)
    );
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].state, State::Cancelled);
}

/// A cancellation requested while a worker held the task survives that worker's death: the next
/// claim ends the task as cancelled instead of running it again.
pub async fn a_claim_never_clears_a_cancellation_request(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Runner, 0).await;
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.into(),
        attempt_id: smol_durable::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    store
        .claim_next_task(next("owner_a", 10))
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(
        store
            .request_cancel(&created.run.run_id, 50)
            .await
            .expect("cancel"),
        CancelRequest::Requested
    );
    let other = fixture.another_handle().await;
    assert!(other
        .claim_next_task(next("owner_b", 200))
        .await
        .expect("claim")
        .is_none());
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    let run = other
        .get_run(&created.run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        (task.state, run.state),
        (State::Cancelled, State::Cancelled)
    );
}

/// After a takeover, the old owner's heartbeat renews none of its step leases (its successor
/// expired them so it can reclaim at once) and reports them lost.
pub async fn a_deposed_owner_renews_no_step_leases(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = &created.run.run_id;
    let old = started(start(store, &created, "owner_old", 60_000, 0).await);
    let step = claimed(store, run_id, "step:held", "owner_old", 60_000, 0).await;
    started(
        start_taking_over(
            store,
            &created,
            "owner_new",
            Some("owner_old"),
            61_000,
            1_000,
        )
        .await,
    );
    let renewed = store
        .renew_leases(RenewLeases {
            owner_id: "owner_old".into(),
            task_id: created.task.task_id.clone(),
            attempt_id: old.attempt_id.clone(),
            run_id: run_id.clone(),
            lease_expires_at: 70_000,
            steps: vec![StepLease {
                step_id: step.step_id.clone(),
                fence: 1,
                lease_expires_at: 70_000,
            }],
            now: 1_001,
        })
        .await
        .expect("renew");
    assert!(!renewed.task_held);
    assert_eq!(renewed.lost_steps, vec![step.step_id.clone()]);
    let row = store
        .get_step(run_id, "step:held")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        row.lease_expires_at,
        Some(1_000),
        "the takeover's expiry stands"
    );
}

/// Child runs still unfinished when their attempt ends end with it.
pub async fn unfinished_children_end_with_their_attempt(fixture: Fixture) {
    let store = fixture.store.as_ref();
    for (outcome, expected) in [
        (
            AttemptOutcome::Failed {
                reason: json!({"message": "x"}),
                retry_at: None,
            },
            State::Failed,
        ),
        (
            AttemptOutcome::Cancelled {
                reason: json!({"message": "workflow cancelled"}),
            },
            State::Cancelled,
        ),
    ] {
        let created = seed(store, ClaimScope::Local, 0).await;
        let attempt = started(start(store, &created, OWNER, 100, 0).await);
        let child = store
            .create_child_run(NewChildRun {
                run_id: smol_durable::new_id("run"),
                task_id: created.task.task_id.clone(),
                root_run_id: created.run.run_id.clone(),
                parent_run_id: created.run.run_id.clone(),
                parent_step_id: "step_parent".into(),
                workflow: WorkflowInfo::new(),
                args: json!({}),
                now: 1,
            })
            .await
            .expect("child");
        finish(store, &created, &attempt.attempt_id, OWNER, outcome, 5)
            .await
            .expect("finish");
        let child = store
            .get_run(&child.run_id)
            .await
            .expect("get")
            .expect("child");
        assert_eq!(child.state, expected);
    }
}

/// A runner task whose workers keep dying gets at most `max_attempts` attempts, then fails.
pub async fn runner_tasks_stop_after_max_attempts(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 2;
    let created = store.create_run(new).await.expect("create");
    let next = |now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: format!("owner_{now}"),
        attempt_id: smol_durable::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store
        .claim_next_task(next(10))
        .await
        .expect("claim")
        .expect("attempt 1");
    assert_eq!((first.attempt.attempt, first.failed_attempts), (1, 0));
    let second = store
        .claim_next_task(next(200))
        .await
        .expect("claim")
        .expect("attempt 2");
    assert_eq!((second.attempt.attempt, second.failed_attempts), (2, 1));
    assert!(store
        .claim_next_task(next(400))
        .await
        .expect("claim")
        .is_none());
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(task.state, State::Failed);
    assert_eq!(
        task.failure_reason,
        Some(json!({"message": "gave up after 2 attempts"}))
    );
    let attempts = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts");
    assert!(attempts.iter().all(|a| a.state == State::Failed));
}

/// `max_attempts: 0` allows one attempt, like 1 ([`decide::claim_verdict`]); the task then
/// closes with the core's reason. Pins PostgreSQL's claim statement to the core's rule.
///
/// [`decide::claim_verdict`]: smol_durable::decide::claim_verdict
pub async fn zero_max_attempts_means_one_attempt(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 0;
    let created = store.create_run(new).await.expect("create");
    let next = |now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: format!("owner_{now}"),
        attempt_id: smol_durable::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let first = store.claim_next_task(next(10)).await.expect("claim");
    assert_eq!(first.map(|claimed| claimed.attempt.attempt), Some(1));
    let other = fixture.another_handle().await;
    assert!(other
        .claim_next_task(next(200))
        .await
        .expect("claim")
        .is_none());
    let task = other
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    let closure = smol_durable::decide::Closure::out_of_attempts(1);
    assert_eq!(
        (task.state, task.failure_reason),
        (closure.state, Some(closure.reason))
    );
}

/// An attempt its owner hands back (shutdown, or parked until a sleep's `wakeAt`) leaves the
/// task `pending`, is not claimable before `not_before`, and does not count against
/// `max_attempts`; attempts abandoned by dead owners do.
pub async fn released_attempts_do_not_use_up_max_attempts(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let mut new = NewRun::new(ClaimScope::Runner, OWNER, WorkflowInfo::new(), json!({}), 0);
    new.max_attempts = 2;
    let created = store.create_run(new).await.expect("create");
    let next = |owner: &str, now| ClaimNextTask {
        scope: ClaimScope::Runner,
        owner_id: owner.to_owned(),
        attempt_id: smol_durable::new_id("attempt"),
        lease_expires_at: now + 100,
        now,
    };
    let claim = |owner: &'static str, now: i64| store.claim_next_task(next(owner, now));
    let first = claim("owner_a", 10)
        .await
        .expect("claim")
        .expect("attempt 1");
    finish(
        store,
        &created,
        &first.attempt.attempt_id,
        "owner_a",
        AttemptOutcome::Released {
            not_before: Some(500),
        },
        20,
    )
    .await
    .expect("park");
    let task = store
        .get_task(&created.task.task_id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(
        (task.state, task.not_before, task.claimed_by_owner_id),
        (State::Pending, Some(500), None)
    );
    assert!(
        claim("owner_b", 499).await.expect("claim").is_none(),
        "not before wakeAt"
    );
    let second = claim("owner_b", 500)
        .await
        .expect("claim")
        .expect("attempt 2");
    finish(
        store,
        &created,
        &second.attempt.attempt_id,
        "owner_b",
        AttemptOutcome::Released { not_before: None },
        510,
    )
    .await
    .expect("release");
    // Two attempts so far, both handed back: a third may start, and then a fourth after the
    // third's owner dies (its lease expires); the fourth's death uses up the allowance.
    let third = claim("owner_c", 520)
        .await
        .expect("claim")
        .expect("attempt 3");
    assert_eq!((third.attempt.attempt, third.failed_attempts), (3, 0));
    let fourth = claim("owner_d", 700)
        .await
        .expect("claim")
        .expect("attempt 4");
    assert_eq!(
        (fourth.attempt.attempt, fourth.failed_attempts),
        (4, 1),
        "the third attempt's owner died"
    );
    assert!(claim("owner_e", 900).await.expect("claim").is_none());
    let states: Vec<State> = store
        .list_attempts(&created.task.task_id)
        .await
        .expect("attempts")
        .into_iter()
        .map(|attempt| attempt.state)
        .collect();
    assert_eq!(
        states,
        vec![
            State::Cancelled,
            State::Cancelled,
            State::Failed,
            State::Failed
        ]
    );
}
