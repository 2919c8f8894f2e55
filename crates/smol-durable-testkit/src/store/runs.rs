//! Runs, child runs, scripts and owners: created, read and listed as stored.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_runs_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::runs,
            $factory,
            resume_of_missing_run_gives_the_spec_error,
            child_runs_are_insert_if_absent,
            scripts_are_content_addressed,
            idempotency_key_returns_the_first_task,
            owners_round_trip,
            list_runs_filters_and_orders,
            text_that_looks_like_sql_is_stored_as_data,
            a_run_is_created_with_the_steps_and_ledger_rows_it_carries
        );
    };
}

/// Resuming an id the store does not have fails with SPEC's exact message.
///
/// Checks [`DurableStore::get_run`](smol_durable_core::DurableStore::get_run).
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

/// Child runs: insert-if-absent by id, share the root's task, excluded from root listings.
///
/// Checks [`DurableStore::create_child_run`](smol_durable_core::DurableStore::create_child_run).
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
///
/// Checks [`DurableStore::put_script`](smol_durable_core::DurableStore::put_script).
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

/// Creating a task with an idempotency key already used in the scope returns the first task.
///
/// Checks [`DurableStore::create_run`](smol_durable_core::DurableStore::create_run).
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
///
/// Checks
/// [`DurableStore::register_owner`](smol_durable_core::DurableStore::register_owner),
/// [`DurableStore::get_owner`](smol_durable_core::DurableStore::get_owner).
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
///
/// Checks [`StoreAdmin::list_runs`](smol_durable_core::StoreAdmin::list_runs).
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
    let ids = |runs: Vec<smol_durable_core::store::RunRecord>| -> Vec<String> {
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

/// Values are bound, never spliced into SQL: text made of SQL syntax (quotes, comments,
/// statement separators, `LIKE` wildcards) in every user-controlled field round-trips as data,
/// matches nothing it should not, and every table is still there afterwards.
///
/// Checks
/// [`DurableStore::create_run`](smol_durable_core::DurableStore::create_run),
/// [`DurableStore::complete_step`](smol_durable_core::DurableStore::complete_step),
/// [`DurableStore::append_events`](smol_durable_core::DurableStore::append_events).
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
            step_id: smol_durable_core::new_id("step"),
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
        .append_events(&[EventRow::from(&NewEvent {
            event_id: format!("evt_{HOSTILE}"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            attempt_id: None,
            step_id: None,
            event_type: smol_durable_core::EventType::Log,
            payload: json!({ HOSTILE: HOSTILE }),
            created_at: 2,
        })])
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
    assert_eq!(events[0].event_id, format!("evt_{HOSTILE}"));
    assert_eq!(events[0].event_type, "workflow.log");
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

/// A new run carrying completed steps and copied ledger rows (a fork) stores them with the run
/// in one operation, as given and in order; the copied rows are shown, not spent; the lineage
/// round-trips.
///
/// Checks [`DurableStore::create_run`](smol_durable_core::DurableStore::create_run) and
/// [`DurableStore::budget_spent`](smol_durable_core::DurableStore::budget_spent).
pub async fn a_run_is_created_with_the_steps_and_ledger_rows_it_carries(fixture: Fixture) {
    use smol_durable_core::store::{ForkOrigin, LedgerEntry, LedgerSource, StepRecord};
    let store = fixture.store.as_ref();
    let mut workflow = WorkflowInfo::new();
    let mut origin = ForkOrigin::default();
    origin.run_id = "run_source".into();
    origin.before_step = Some(4);
    origin.copied_steps = 3;
    workflow.forked_from = Some(origin.clone());
    let mut new = NewRun::new(ClaimScope::Local, OWNER, workflow, json!({}), 50);
    let run_id = new.run_id.clone();
    // 3 000 copies: the store takes them in one operation, whatever its statement limits.
    new.steps = (0..3_000u32)
        .map(|n| StepRecord {
            step_id: smol_durable_core::new_id("step"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: format!("step:sig_{n:04}"),
            input_signature_hash: format!("hash{n}"),
            input_signature_json: format!("{{\"prompt\":\"p{n}\"}}"),
            state: State::Completed,
            input: json!({ "prompt": format!("p{n}") }),
            result: Some(json!({ "n": n, "text": "é ✓ '; DROP TABLE x; --" })),
            failure_reason: None,
            worker_id: None,
            lease_expires_at: None,
            fence: 2,
            last_attempt_at: Some(10),
            // Ties in creation time keep the order of the ids.
            created_at: 10 + i64::from(n / 100),
            updated_at: 20,
        })
        .collect();
    let copied_step = new.steps[0].step_id.clone();
    new.ledger = vec![LedgerEntry::new(
        &run_id,
        &run_id,
        &copied_step,
        LedgerSource::Copied,
        format!("{copied_step}:budget_source"),
        Some(&smol_durable_core::Usage::tokens(3, 7)),
        50,
    )];
    let expected = new.steps.clone();
    let created = store.create_run(new).await.expect("create_run");
    assert!(created.created);
    assert_eq!(created.run.workflow.forked_from, Some(origin));
    assert_eq!(store.load_steps(&run_id).await.expect("steps"), expected);
    let one = store
        .get_step(&run_id, "step:sig_0042")
        .await
        .expect("get_step")
        .expect("copied step");
    assert_eq!(one, expected[42]);
    let ledger = store.ledger_entries(&run_id).await.expect("ledger");
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].source_type.clone(), ledger[0].output_tokens),
        (LedgerSource::Copied, 7)
    );
    assert_eq!(
        store.budget_spent(&run_id).await.expect("spent"),
        0,
        "copied rows are not spent"
    );
    // Two steps with one name cannot be stored: nothing of the run is.
    let mut bad = NewRun::new(ClaimScope::Local, OWNER, WorkflowInfo::new(), json!({}), 60);
    let bad_id = bad.run_id.clone();
    bad.steps = (0..2)
        .map(|_| StepRecord {
            step_id: smol_durable_core::new_id("step"),
            run_id: bad_id.clone(),
            root_run_id: bad_id.clone(),
            checkpoint_name: "step:sig_same".into(),
            ..expected[0].clone()
        })
        .collect();
    assert!(store.create_run(bad).await.is_err());
    assert_eq!(store.get_run(&bad_id).await.expect("get_run"), None);
}
