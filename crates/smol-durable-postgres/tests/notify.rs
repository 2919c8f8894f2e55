//! Idle workers are woken by `LISTEN/NOTIFY`, not by polling.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smol_durable_core::store::State;
use smol_durable_core::{DurableStore, Engine, RunRequest, SubmitOptions, WorkerOptions};
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_testkit::{postgres_test_url, ScriptedEngine, ScriptedProvider};

async fn two_handles(test: &str) -> (PostgresStore, PostgresStore) {
    let url = postgres_test_url(test);
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let options = PostgresOptions::new(url).schema(schema).max_connections(4);
    let first = PostgresStore::connect_with(options.clone())
        .await
        .expect("connect");
    let second = PostgresStore::connect_with(options).await.expect("connect");
    (first, second)
}

/// A worker that would poll only once a minute picks a run up as soon as another process
/// submits it.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_wakes_an_idle_worker_on_another_handle() {
    let (worker_store, submit_store) = two_handles("notify").await;
    assert!(worker_store.capabilities().notify);
    let scripts = ScriptedEngine::new().workflow("main.mjs", |ctx| async move {
        Ok(ctx.agent("hello", serde_json::Value::Null).await?)
    });
    let engine_on = |store: PostgresStore| {
        Engine::builder()
            .store(Arc::new(store))
            .script_engine(Arc::new(scripts.clone()))
            .provider(Arc::new(ScriptedProvider::new("scripted")))
            .build()
            .expect("engine")
    };
    let worker_engine = engine_on(worker_store.clone());
    let worker = worker_engine.worker(WorkerOptions::new().poll_interval(Duration::from_secs(60)));
    // Let the worker find the queue empty and go idle, listening.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let submitted = engine_on(submit_store)
        .submit(
            RunRequest::new(scripts.source("main.mjs"), json!({})),
            SubmitOptions::new(),
        )
        .await
        .expect("submit");
    let started = Instant::now();
    loop {
        let run = worker_store
            .get_run(&submitted.run_id)
            .await
            .expect("get_run")
            .expect("run");
        if run.state == State::Completed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the idle worker was not woken (it polls only every 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown();
    let report = worker.join().await.expect("worker");
    assert_eq!(report.completed, 1);
}
