//! JavaScript threads: one per live run, gone when the run ends or is cancelled. Its own test
//! binary, so no other test's threads are counted.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smol_durable_boa::BoaEngine;
use smol_durable_core::{Engine, EventType, MemoryStore, RunRequest, WorkflowSource};
use smol_durable_testkit::ScriptedProvider;

fn js_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|name| name.trim() == "smol-durable-js")
                })
                .count()
        })
        .unwrap_or(0)
}

async fn settle_to(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = js_threads();
        if now == expected || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_runs_ends_their_javascript_threads_and_many_runs_can_be_live() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("wait.mjs");
    std::fs::write(
        &path,
        "export const meta = { name: \"wait\", description: \"waits on an agent\" };\nexport default await agent(`slow ${args.i}`);\n",
    )
    .expect("write");
    let provider =
        Arc::new(ScriptedProvider::new("scripted").with_default_delay(Duration::from_secs(30)));
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(provider.clone())
        .build()
        .expect("engine");
    assert_eq!(js_threads(), 0);

    // Cancellation while an agent is pending ends the run and its thread.
    let mut handles = Vec::new();
    for i in 0..3 {
        let source = WorkflowSource::from_file(&path).expect("source");
        let mut handle = engine
            .start(RunRequest::new(source, json!({ "i": i })))
            .await
            .expect("start");
        let mut events = handle.events().expect("events");
        while let Some(event) = events.recv().await {
            if event.event_type == EventType::AgentStarted {
                break;
            }
        }
        handles.push(handle);
    }
    assert_eq!(js_threads(), 3, "one JavaScript thread per live run");
    for handle in handles {
        handle.cancel();
        let error = tokio::time::timeout(Duration::from_secs(10), handle.join())
            .await
            .expect("prompt")
            .expect_err("cancelled");
        assert_eq!(error.to_string(), "workflow cancelled");
    }
    assert_eq!(
        settle_to(0).await,
        0,
        "no JavaScript thread outlives its run"
    );

    // A script spinning on promise jobs never waits for an answer; cancelling drops its
    // evaluation after the grace period, which stops the job queue and ends the thread.
    let spin = dir.path().join("spin.mjs");
    std::fs::write(
        &spin,
        "export const meta = { name: \"spin\", description: \"spins on microtasks\" };\nconst p = agent(\"slow spin\");\nconst spin = () => Promise.resolve().then(spin);\nspin();\nexport default await p;\n",
    )
    .expect("write");
    let impatient = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(provider.clone())
        .limits(smol_durable_core::Limits {
            cancel_grace: Duration::from_millis(200),
            ..smol_durable_core::Limits::default()
        })
        .build()
        .expect("engine");
    let handle = impatient
        .start(RunRequest::new(
            WorkflowSource::from_file(&spin).expect("source"),
            json!({}),
        ))
        .await
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.calls_for("slow spin") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.cancel();
    let error = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("cancellation is not stuck behind the spinning script")
        .expect_err("cancelled");
    assert_eq!(error.to_string(), "workflow cancelled");
    assert_eq!(settle_to(0).await, 0, "the spinning thread ended");

    // Two hundred runs parked on pending agents at once, then all cancelled.
    let parked =
        Arc::new(ScriptedProvider::new("scripted").with_default_delay(Duration::from_secs(60)));
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(parked.clone())
        .build()
        .expect("engine");
    let mut handles = Vec::new();
    for i in 0..200 {
        let source = WorkflowSource::from_file(&path).expect("source");
        handles.push(
            engine
                .start(RunRequest::new(source, json!({ "i": i })))
                .await
                .expect("start"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while parked.call_count() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        parked.max_in_flight(),
        200,
        "all two hundred are live at once"
    );
    assert_eq!(js_threads(), 200);
    for handle in &handles {
        handle.cancel();
    }
    for handle in handles {
        assert!(handle.join().await.is_err());
    }
    assert_eq!(settle_to(0).await, 0);
}
