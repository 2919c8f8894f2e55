//! JavaScript engine benchmarks: cold start, host-call round trip, memory per parked run. They
//! drive `BoaEngine` with a bare host (no store, no engine) so the numbers are the JavaScript
//! side's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable_boa::BoaEngine;
use smol_durable_core::{
    BudgetSnapshot, HostFuture, HostRequest, ScriptEngine, ScriptInvocation, WorkflowHost,
    WorkflowSource,
};
use tokio_util::sync::CancellationToken;

/// Answers every call at once, or never (to park runs).
#[derive(Debug, Default)]
struct BareHost {
    park: bool,
    calls: AtomicUsize,
}

impl WorkflowHost for BareHost {
    fn call(&self, request: HostRequest) -> HostFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.park && matches!(request, HostRequest::Agent { .. }) {
            return Box::pin(futures::future::pending());
        }
        Box::pin(futures::future::ready(Ok(Value::String("ok".to_owned()))))
    }

    fn budget(&self) -> BudgetSnapshot {
        BudgetSnapshot {
            total: None,
            spent: 0,
        }
    }
}

fn invocation(source: &WorkflowSource, host: Arc<BareHost>) -> ScriptInvocation {
    ScriptInvocation {
        source: source.clone(),
        args: json!({ "n": 3 }),
        host,
        cancel: CancellationToken::new(),
        run_id: "run_bench".to_owned(),
        max_sleep_ms: smol_durable_core::Limits::default().max_sleep_ms,
    }
}

const TWENTY_LINES: &str = r#"export const meta = { name: "cold", description: "a 20-line module" };
const topics = ["a", "b", "c"];
function outline(topic) {
  return { topic, points: [1, 2, 3].map((n) => `${topic}-${n}`) };
}
const outlines = topics.map(outline);
let total = 0;
for (const o of outlines) {
  total += o.points.length;
}
const summary = {
  count: outlines.length,
  total,
  first: outlines[0].points[0],
};
log("summary", summary);
phase("done");
const doubled = args.n * 2;
const result = { summary, doubled };
export default result;
"#;

/// Median wall time to create a context, parse and evaluate a 20-line module.
pub async fn cold_start(iterations: usize) -> anyhow::Result<Duration> {
    median_evaluation(&BoaEngine::new(), iterations).await
}

/// The argument that makes the bench binary serve the isolated engine's protocol.
pub const SCRIPT_HOST_ARG: &str = "script-host";

/// [`cold_start`] in the isolated mode: a child process per evaluation (this binary, serving
/// the protocol), so the difference is the isolation's overhead per run.
pub async fn cold_start_isolated(iterations: usize) -> anyhow::Result<Duration> {
    let engine =
        smol_durable_boa::IsolatedEngine::new(std::env::current_exe()?).args([SCRIPT_HOST_ARG]);
    median_evaluation(&engine, iterations).await
}

async fn median_evaluation(
    engine: &dyn smol_durable_core::ScriptEngine,
    iterations: usize,
) -> anyhow::Result<Duration> {
    let source = WorkflowSource::inline("/tmp/cold.mjs", TWENTY_LINES);
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        engine
            .evaluate(invocation(&source, Arc::new(BareHost::default())))
            .await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Mean time of one `await agent()` round trip between the script and the host.
pub async fn round_trip(calls: usize) -> anyhow::Result<Duration> {
    loop_time(calls, "await agent(\"x\")").await
}

/// Mean time of one plain `await` in boa, for comparison.
pub async fn plain_await(calls: usize) -> anyhow::Result<Duration> {
    loop_time(calls, "await null").await
}

async fn loop_time(calls: usize, body: &str) -> anyhow::Result<Duration> {
    let engine = BoaEngine::new();
    let text = format!(
        "export const meta = {{ name: \"loop\", description: \"awaits in a loop\" }};\nfor (let i = 0; i < {calls}; i++) {body};\nexport default 1;\n"
    );
    let source = WorkflowSource::inline("/tmp/loop.mjs", text);
    let started = Instant::now();
    engine
        .evaluate(invocation(&source, Arc::new(BareHost::default())))
        .await?;
    Ok(started.elapsed() / calls as u32)
}

/// Mean time of one durable `agent()` step through the whole engine (memory store, instant
/// scripted provider): JavaScript boundary plus claim, completion, ledger and events.
pub async fn engine_step(calls: usize) -> anyhow::Result<Duration> {
    let engine = smol_durable_core::Engine::builder()
        .store(Arc::new(smol_durable_core::MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(smol_durable_testkit::ScriptedProvider::new(
            "bench",
        )))
        .build()?;
    let text = format!(
        "export const meta = {{ name: \"steps\", description: \"durable steps in a loop\" }};\nfor (let i = 0; i < {calls}; i++) await agent(`step ${{i}}`);\nexport default 1;\n"
    );
    let started = Instant::now();
    engine
        .run(WorkflowSource::inline("/tmp/steps.mjs", text), json!({}))
        .await?;
    Ok(started.elapsed() / calls as u32)
}

pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| {
            statm
                .split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Resident memory per run parked on a pending agent call.
pub async fn parked_memory(runs: usize) -> anyhow::Result<u64> {
    let engine = Arc::new(BoaEngine::new());
    let source = WorkflowSource::inline(
        "/tmp/park.mjs",
        "export const meta = { name: \"park\", description: \"waits\" };\nexport default await agent(\"never answered\");\n",
    );
    let before = resident_bytes();
    let host = Arc::new(BareHost {
        park: true,
        ..BareHost::default()
    });
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let engine = Arc::clone(&engine);
        let invocation = invocation(&source, Arc::clone(&host));
        tasks.push(tokio::spawn(
            async move { engine.evaluate(invocation).await },
        ));
    }
    while host.calls.load(Ordering::SeqCst) < runs {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = resident_bytes();
    for task in tasks {
        task.abort();
    }
    Ok(after.saturating_sub(before) / runs as u64)
}
