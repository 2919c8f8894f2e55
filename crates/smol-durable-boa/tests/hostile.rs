//! Hostile scripts (`tests/scripts/hostile/`) must never take the host down: each fails with a
//! clear error within a configured limit while the same engine keeps serving another run. Both
//! engine modes are checked; the ones only the isolated mode can contain (unbounded memory,
//! CPU spent across many bounded loops) run only there.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smol_durable_boa::{BoaEngine, IsolatedEngine, IsolationLimits};
use smol_durable_core::{
    Engine, Error, MemoryStore, RunOutput, ScriptEngine, ScriptErrorKind, WorkflowSource,
};
use smol_durable_testkit::ScriptedProvider;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Isolated,
}

fn scripts(mode: Mode) -> Arc<dyn ScriptEngine> {
    match mode {
        Mode::InProcess => Arc::new(BoaEngine::new().loop_iteration_limit(2_000_000)),
        Mode::Isolated => isolated(4),
    }
}

/// The isolated engine with a CPU-time limit, 2 GiB of memory, and no loop limit worth the
/// name: the CPU-time limit must be what stops a spin.
fn isolated(cpu_seconds: u64) -> Arc<dyn ScriptEngine> {
    Arc::new(
        IsolatedEngine::new(env!("CARGO_BIN_EXE_smol-durable-script-host"))
            .limits(
                IsolationLimits::default()
                    .cpu_seconds(cpu_seconds)
                    .memory_bytes(2 * 1024 * 1024 * 1024),
            )
            .javascript(BoaEngine::new().loop_iteration_limit(u64::MAX)),
    )
}

fn engine(mode: Mode) -> Engine {
    engine_on(scripts(mode))
}

fn engine_on(scripts: Arc<dyn ScriptEngine>) -> Engine {
    Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(scripts)
        .provider(Arc::new(ScriptedProvider::new("scripted")))
        .build()
        .expect("engine")
}

fn hostile(name: &str) -> WorkflowSource {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts/hostile")
        .join(name);
    WorkflowSource::from_file(path).expect("script")
}

const WELL_BEHAVED: &str = "export const meta = { name: \"ok\", description: \"ok\" };\nexport default await agent(\"still serving\");\n";

/// Runs `name` while a well-behaved run shares the engine; returns the hostile run's outcome
/// and how long it took.
async fn run_beside_a_good_run(mode: Mode, name: &str) -> (Result<RunOutput, Error>, Duration) {
    let engine = engine(mode);
    let started = Instant::now();
    let hostile_run = engine.run(hostile(name), json!({}));
    let good_run = async {
        // Started while the hostile script is busy.
        tokio::time::sleep(Duration::from_millis(50)).await;
        engine
            .run(WorkflowSource::inline("ok.mjs", WELL_BEHAVED), json!({}))
            .await
    };
    let (outcome, good) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(hostile_run, good_run)
    })
    .await
    .unwrap_or_else(|_| panic!("{name} ({mode:?}) must end within its limits"));
    let good = good.unwrap_or_else(|error| panic!("the good run failed beside {name}: {error}"));
    assert_eq!(good.result, json!("echo: still serving"));
    (outcome.map_err(Error::from), started.elapsed())
}

fn expect_error(
    name: &str,
    mode: Mode,
    outcome: Result<RunOutput, Error>,
    kind: ScriptErrorKind,
    text: &str,
) {
    match outcome {
        Err(Error::Script(error)) => {
            assert_eq!(error.kind(), kind, "{name} ({mode:?}): {error}");
            assert!(
                error.to_string().contains(text),
                "{name} ({mode:?}): {error}"
            );
        }
        other => panic!("{name} ({mode:?}) must fail with {kind:?}, got {other:?}"),
    }
}

/// What each hostile script must end with: its error kind, and text the message must hold.
fn expectation(name: &str, mode: Mode) -> (ScriptErrorKind, &'static str) {
    use ScriptErrorKind::{Import, Limit, Thrown};
    match (name, mode) {
        ("spin.mjs", Mode::InProcess) => (Limit, "loop iteration limit"),
        ("spin.mjs" | "spin_nested.mjs" | "allocate.mjs", Mode::Isolated) => {
            (Limit, "IsolationLimits")
        }
        ("recursion.mjs", _) => (Limit, "recursion limit"),
        ("deep_nested.mjs", _) => (Thrown, "nested deeper than 100 levels"),
        // boa counts `repeat` against the loop limit in-process; isolated, the string is built
        // and its process runs out of memory or output allowance.
        ("huge_string.mjs" | "huge_prompt.mjs", Mode::InProcess) => (Limit, "loop iteration limit"),
        ("huge_string.mjs" | "huge_prompt.mjs", Mode::Isolated) => (Limit, "IsolationLimits"),
        ("import_parent_escape.mjs", _) => (Import, "resolves outside the workflow's directory"),
        ("import_absolute.mjs" | "import_dynamic.mjs", _) => {
            (Import, "import of \"/etc/passwd\" is not allowed")
        }
        ("import_bare.mjs", _) => (Import, "import of \"lodash\" is not allowed"),
        _ => panic!("no expectation for {name} ({mode:?})"),
    }
}

const FAILING: [&str; 11] = [
    "spin.mjs",
    "spin_nested.mjs",
    "recursion.mjs",
    "allocate.mjs",
    "deep_nested.mjs",
    "huge_string.mjs",
    "huge_prompt.mjs",
    "import_parent_escape.mjs",
    "import_absolute.mjs",
    "import_bare.mjs",
    "import_dynamic.mjs",
];

/// Scripts only a child process can contain: unbounded memory would take the host down, and
/// CPU spent across many loops that are each under the iteration limit is unbounded in-process.
fn contained_in(name: &str, mode: Mode) -> bool {
    mode == Mode::Isolated || !matches!(name, "allocate.mjs" | "spin_nested.mjs")
}

async fn every_hostile_script_fails_clearly(mode: Mode) {
    for name in FAILING.iter().filter(|name| contained_in(name, mode)) {
        let (outcome, took) = run_beside_a_good_run(mode, name).await;
        println!("{mode:?} {name}: {took:?}");
        let (kind, text) = expectation(name, mode);
        expect_error(name, mode, outcome, kind, text);
    }
    let (outcome, _) = run_beside_a_good_run(mode, "banned_globals.mjs").await;
    let output = outcome.expect("every attempt is caught");
    assert_eq!(output.result, json!({ "reached": [] }), "{mode:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_fail_clearly_in_process() {
    every_hostile_script_fails_clearly(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_fail_clearly_in_isolation() {
    every_hostile_script_fails_clearly(Mode::Isolated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_isolated_run_kills_its_process() {
    let engine = engine_on(isolated(60));
    let handle = engine
        .start(smol_durable_core::RunRequest::new(
            hostile("spin.mjs"),
            json!({}),
        ))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    handle.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(20), handle.join())
        .await
        .expect("the cancelled run ends");
    assert!(outcome.is_err(), "{outcome:?}");
    // The cancel grace (5 s) bounds it, not the 60 s CPU limit: the child is killed when the
    // evaluation is dropped.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_script_process_gets_none_of_the_environment() {
    // A stand-in for the script host that writes down the environment it was given.
    let dir = tempfile::tempdir().expect("dir");
    let seen = dir.path().join("env.txt");
    let probe: Arc<dyn ScriptEngine> = Arc::new(
        IsolatedEngine::new("/bin/sh").args(["-c", &format!("env > '{}'", seen.display())]),
    );
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test process has an environment to leak"
    );
    let outcome = engine_on(probe).run(hostile("spin.mjs"), json!({})).await;
    assert!(outcome.is_err(), "the stand-in speaks no protocol");
    let environment = std::fs::read_to_string(&seen).expect("the stand-in ran");
    for name in ["PATH", "HOME", "CARGO"] {
        assert!(
            !environment.lines().any(|line| line.starts_with(name)),
            "{name} reached the script process: {environment}"
        );
    }
}
