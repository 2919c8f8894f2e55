//! Runner mode with real processes: `smol-durable worker` processes sharing one database
//! (PostgreSQL, and one SQLite file), killed with SIGKILL, frozen with SIGSTOP, cancelled from
//! another process, and cut off from their database. Every agent call goes through the
//! `command` provider, a shell script that logs the call (with a token unique to the call)
//! before it answers, so the test counts what was really paid for.
//! (Long, but one list of cases.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable_boa::BoaEngine;
use smol_durable_core::store::{RetryingStore, State, StoreRetryPolicy};
use smol_durable_core::{
    DebugProvider, DurableStore, Engine, RunRequest, SubmitOptions, WorkflowSource,
};
use smol_durable_postgres::PostgresStore;
use smol_durable_sqlite::SqliteStore;
use smol_durable_testkit::postgres_test_url;

/// These tests each start several worker processes; two at once would starve a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TEN_STEPS: &str = r#"export const meta = { name: "ten-steps", description: "ten agent calls in a row" };
const results = [];
for (let i = 0; i < 10; i++) {
  results.push(await agent(`run ${args.n} step ${i}`));
}
export default results;
"#;

const WAITS: &str = r#"export const meta = { name: "waits", description: "waits for a signal between two calls" };
import { waitFor } from "workflow:extra";
const before = await agent(`before ${args.n}`);
const answer = await waitFor("go");
export default [before, answer, await agent(`after ${args.n}`)];
"#;

const ONE_SLOW_STEP: &str = r#"export const meta = { name: "slow", description: "one slow agent call" };
export default await agent(`slow ${args.n}`);
"#;

/// Where the runs live: the URL or path workers get as `--db`.
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    fn arg(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(url) => url.clone(),
        }
    }

    async fn store(&self) -> Arc<dyn DurableStore> {
        match self {
            Db::Sqlite(path) => Arc::new(SqliteStore::open(path).await.expect("open")),
            // Through the retry layer, as an engine reads: a test that cuts the server's
            // connections cuts this store's too, and its next statement fails as retryable.
            Db::Postgres(url) => Arc::new(RetryingStore::new(
                Arc::new(PostgresStore::connect(url).await.expect("connect")),
                StoreRetryPolicy::default(),
            )),
        }
    }
}

/// A database of its own on the test server (the CLI uses the `public` schema of its URL).
async fn postgres_db(test: &str) -> Db {
    let url = postgres_test_url(test);
    let admin = PostgresStore::connect(&url).await.expect("connect");
    let name = format!("d_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .expect("create database");
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    Db::Postgres(format!("{server}/{name}"))
}

/// A temp dir with the workflows, the logging provider script and its call log. A provider
/// whose worker was killed before it wrote the request reads nothing and logs nothing: no call
/// was made.
struct Cluster {
    dir: tempfile::TempDir,
    db: Db,
    workers: Vec<Child>,
}

/// One logged provider call.
#[derive(Debug, Clone)]
struct Call {
    token: String,
    step_id: String,
    /// The run and the prompt: the step a call served, also when its claim was deferred and
    /// its process killed, so that its repeat runs under a new step id.
    run_id: String,
    prompt: String,
}

impl Cluster {
    /// `provider_sleep` is how long each call takes (a shell `sleep` argument).
    fn new(dir: tempfile::TempDir, db: Db, provider_sleep: &str) -> Self {
        let log = dir.path().join("calls.log");
        let script = format!(
            "IFS= read -r line\n\
             [ -n \"$line\" ] || exit 1\n\
             token=\"$$.$(date +%s%N)\"\n\
             printf '%s %s\\n' \"$token\" \"$line\" >> '{}'\n\
             sleep {provider_sleep}\n\
             printf '{{\"output\": \"%s\", \"usage\": {{\"inputTokens\": 1, \"outputTokens\": 1}}}}' \"$token\"\n",
            log.display()
        );
        std::fs::write(dir.path().join("provider.sh"), script).expect("write provider");
        std::fs::write(dir.path().join("ten.mjs"), TEN_STEPS).expect("write workflow");
        std::fs::write(dir.path().join("slow.mjs"), ONE_SLOW_STEP).expect("write workflow");
        std::fs::write(dir.path().join("waits.mjs"), WAITS).expect("write workflow");
        Self {
            dir,
            db,
            workers: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_smol-durable"));
        command
            .arg("--db")
            .arg(self.db.arg())
            .args(args)
            .env_remove("SMOL_DURABLE_DB")
            .current_dir(self.dir.path());
        command
    }

    /// Starts a worker process; its stderr goes to `worker-N.log` for post-mortems.
    fn start_worker(&mut self, concurrency: usize, lease_ttl_s: f64) -> u32 {
        let index = self.workers.len();
        let stderr = std::fs::File::create(self.dir.path().join(format!("worker-{index}.log")))
            .expect("log");
        let child = self
            .command(&[
                "worker",
                "--concurrency",
                &concurrency.to_string(),
                "--lease-ttl",
                &lease_ttl_s.to_string(),
                "--shutdown-grace",
                "5",
                "--agent-provider",
                "command",
                "--agent-command",
                "sh provider.sh",
                "--log-level",
                "info",
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the worker starts");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    fn signal(pid: u32, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGKILL: no cleanup at all.
    fn kill_worker(&mut self, index: usize) {
        self.workers[index].kill().expect("SIGKILL");
        self.workers[index].wait().expect("reaped");
    }

    /// SIGTERM every live worker and wait for each to exit by itself.
    fn stop_workers(&mut self) {
        for worker in &mut self.workers {
            if worker.try_wait().expect("try_wait").is_none() {
                Self::signal(worker.id(), "-TERM");
            }
        }
        for (index, worker) in self.workers.iter_mut().enumerate() {
            let started = Instant::now();
            while worker.try_wait().expect("try_wait").is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "worker {index} did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let (token, request) = line.split_once(' ').expect("token and request");
                let request: Value = serde_json::from_str(request).expect("request JSON");
                let text = |field: &str| request[field].as_str().expect(field).to_owned();
                Call {
                    token: token.to_owned(),
                    step_id: text("stepId"),
                    run_id: text("runId"),
                    prompt: text("prompt"),
                }
            })
            .collect()
    }

    fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|index| {
                let path = self.dir.path().join(format!("worker-{index}.log"));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- worker {index} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Submits `count` runs of `workflow` from this process (nothing executes here).
    async fn submit(&self, workflow: &str, count: usize, max_attempts: u32) -> Vec<String> {
        let engine = Engine::builder()
            .store(self.db.store().await)
            .script_engine(Arc::new(BoaEngine::new()))
            .provider(Arc::new(DebugProvider))
            .build()
            .expect("engine");
        let source = WorkflowSource::from_file(self.dir.path().join(workflow)).expect("read");
        let mut runs = Vec::new();
        for n in 0..count {
            let request = RunRequest::new(source.clone(), json!({ "n": n })).provider("command");
            let submitted = engine
                .submit(request, SubmitOptions::new().max_attempts(max_attempts))
                .await
                .expect("submit");
            runs.push(submitted.run_id);
        }
        runs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// Waits until every run is terminal; fails with the worker logs after `limit`.
async fn wait_for_runs(
    cluster: &Cluster,
    store: &dyn DurableStore,
    runs: &[String],
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let mut unfinished = Vec::new();
        for run_id in runs {
            let run = store.get_run(run_id).await.expect("get_run").expect("run");
            if !run.state.is_terminal() {
                unfinished.push(run);
            }
        }
        if unfinished.is_empty() {
            return;
        }
        if started.elapsed() >= limit {
            let mut report = String::new();
            for run in &unfinished {
                let task = store
                    .get_task(&run.task_id)
                    .await
                    .expect("task")
                    .expect("task");
                let attempts = store.list_attempts(&run.task_id).await.expect("attempts");
                let steps = store.load_steps(&run.run_id).await.expect("steps");
                report.push_str(&format!(
                    "{} run {} task {} by {:?} lease {:?} not_before {:?}; attempts {:?}; steps {:?}\n",
                    run.run_id,
                    run.state,
                    task.state,
                    task.claimed_by_owner_id,
                    task.lease_expires_at,
                    task.not_before,
                    attempts
                        .iter()
                        .map(|a| (a.attempt, a.worker_id.clone(), a.state.to_string()))
                        .collect::<Vec<_>>(),
                    steps
                        .iter()
                        .map(|s| (s.state.to_string(), s.fence, s.worker_id.clone(), s.lease_expires_at))
                        .collect::<Vec<_>>(),
                ));
            }
            panic!(
                "{} of {} runs unfinished after {limit:?}\n{report}{}",
                unfinished.len(),
                runs.len(),
                cluster.worker_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_calls(cluster: &Cluster, at_least: usize, limit: Duration) {
    let started = Instant::now();
    while cluster.calls().len() < at_least {
        assert!(
            started.elapsed() < limit,
            "only {} provider calls after {limit:?}\n{}",
            cluster.calls().len(),
            cluster.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the distributed test found, printed for the closing note.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    steps: usize,
    calls: usize,
    kills: usize,
    re_executed: usize,
}

/// Checks every run: completed, each completed step has exactly one ledger row, the run's
/// result is exactly what its step rows hold (a result overwritten after the run read it would
/// differ), every stored result came from a logged call of that step, and no step was called
/// more than `1 + kills` times.
async fn check_runs(
    store: &dyn DurableStore,
    runs: &[String],
    calls: &[Call],
    kills: usize,
) -> Tally {
    let mut per_step: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for call in calls {
        per_step
            .entry((call.run_id.as_str(), call.prompt.as_str()))
            .or_default()
            .push(call.token.as_str());
    }
    let mut tally = Tally {
        runs: runs.len(),
        calls: calls.len(),
        kills,
        ..Tally::default()
    };
    for run_id in runs {
        let run = store.get_run(run_id).await.expect("get_run").expect("run");
        assert_eq!(
            run.state,
            State::Completed,
            "run {run_id}: {:?}",
            run.failure_reason
        );
        let steps = store.load_steps(run_id).await.expect("steps");
        let ledger = store.ledger_entries(run_id).await.expect("ledger");
        let result = run.completed_payload.clone().expect("result");
        let results = result.as_array().expect("an array of step outputs");
        assert_eq!(
            steps.len(),
            results.len(),
            "run {run_id}: one step per call"
        );
        for step in &steps {
            assert_eq!(step.state, State::Completed, "step {}", step.step_id);
            let rows = ledger
                .iter()
                .filter(|entry| entry.step_id.as_deref() == Some(step.step_id.as_str()))
                .count();
            assert_eq!(rows, 1, "step {} has {rows} ledger rows", step.step_id);
            let token = step.result.as_ref().expect("result")["output"]
                .as_str()
                .expect("output token")
                .to_owned();
            let prompt = step.input["prompt"].as_str().expect("the step's prompt");
            let tokens = per_step
                .get(&(run_id.as_str(), prompt))
                .cloned()
                .unwrap_or_default();
            assert!(
                tokens.contains(&token.as_str()),
                "step {}: stored result {token} was never returned by a call",
                step.step_id
            );
            assert!(
                tokens.len() <= 1 + kills,
                "step {} was called {} times with {kills} kills",
                step.step_id,
                tokens.len()
            );
            tally.steps += 1;
            tally.re_executed += tokens.len() - 1;
        }
        let stored: Vec<Value> = steps
            .iter()
            .map(|step| step.result.as_ref().expect("result")["output"].clone())
            .collect();
        assert_eq!(
            results, &stored,
            "run {run_id}: the run read what the steps hold"
        );
    }
    tally
}

/// Lease of the kill test's workers: long enough that a live worker starved of CPU by its
/// neighbours still renews in time (a lapsed lease lets another worker run its call again,
/// which the test would count against the kills), short enough that the killed workers' runs
/// are taken over within seconds.
const KILL_TEST_LEASE_S: f64 = 5.0;

/// 4 workers, 200 runs of 10 steps; two workers are SIGKILLed mid-run and one more starts.
async fn workers_survive_kills(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::new(tempfile::tempdir().expect("dir"), db, "0.01");
    let store = cluster.db.store().await;
    let runs = cluster.submit("ten.mjs", 200, 3).await;
    for _ in 0..4 {
        cluster.start_worker(4, KILL_TEST_LEASE_S);
    }
    wait_for_calls(&cluster, 400, Duration::from_secs(120)).await;
    cluster.kill_worker(0);
    cluster.kill_worker(1);
    cluster.start_worker(4, KILL_TEST_LEASE_S);
    wait_for_runs(&cluster, store.as_ref(), &runs, Duration::from_secs(300)).await;
    cluster.stop_workers();
    let tally = check_runs(store.as_ref(), &runs, &cluster.calls(), 2).await;
    // Only calls in flight on the two killed workers (4 runs each) may have run twice.
    assert!(
        tally.re_executed <= 8,
        "{} calls re-executed after 2 kills of 4-run workers",
        tally.re_executed
    );
    assert_eq!(tally.steps, 2000);
    eprintln!(
        "distributed ({}): {} runs, {} steps, {} provider calls, {} workers killed, {} calls re-executed, 0 violations, {:.1} s",
        match cluster.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        },
        tally.runs,
        tally.steps,
        tally.calls,
        tally.kills,
        tally.re_executed,
        started.elapsed().as_secs_f64()
    );
}

/// A worker frozen (SIGSTOP) past its lease comes back (SIGCONT) after its successor finished
/// the step: the successor's result stands.
async fn a_frozen_worker_cannot_overwrite_its_successor(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(tempfile::tempdir().expect("dir"), db, "2");
    let store = cluster.db.store().await;
    let runs = cluster.submit("slow.mjs", 1, 3).await;
    let zombie = cluster.start_worker(1, 1.0);
    wait_for_calls(&cluster, 1, Duration::from_secs(30)).await;
    // Frozen holding the step: its claim, deferred for `Limits::deferred_claim` (1 s) into the
    // 2 s call, is written by then (a zombie deposed before it claimed is the conformance case
    // `a_deferred_call_is_recorded_once_and_fenced_by_its_attempt`). The wait also lets the
    // writes around that claim commit: on SQLite a process frozen inside a write transaction
    // blocks every writer of the file until it runs again (docs/reliability.md), which is not
    // what this test is about.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    Cluster::signal(zombie, "-STOP");
    cluster.start_worker(1, 1.0);
    wait_for_runs(&cluster, store.as_ref(), &runs, Duration::from_secs(60)).await;
    let calls = cluster.calls();
    assert_eq!(calls.len(), 2, "the successor called once more");
    Cluster::signal(zombie, "-CONT");
    // The zombie's call has long finished; give it time to try to complete the step.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steps = store.load_steps(&runs[0]).await.expect("steps");
    assert_eq!(steps.len(), 1);
    let token = steps[0].result.as_ref().expect("result")["output"].clone();
    assert_eq!(
        token,
        json!(calls[1].token),
        "the successor's result stands"
    );
    assert_eq!(steps[0].fence, 2);
    let run = store
        .get_run(&runs[0])
        .await
        .expect("get_run")
        .expect("run");
    assert_eq!(run.completed_payload, Some(json!(calls[1].token)));
    assert_eq!(
        store.ledger_entries(&runs[0]).await.expect("ledger").len(),
        1
    );
    cluster.stop_workers();
}

/// `smol-durable cancel` in another process stops a run a worker is executing within a
/// heartbeat (a third of the 1 s lease) plus the script's unwinding.
async fn cancel_from_another_process_stops_a_worker_run(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(tempfile::tempdir().expect("dir"), db, "30");
    let store = cluster.db.store().await;
    let runs = cluster.submit("slow.mjs", 1, 3).await;
    cluster.start_worker(1, 1.0);
    wait_for_calls(&cluster, 1, Duration::from_secs(30)).await;
    let asked = Instant::now();
    let output = cluster
        .command(&["cancel", &runs[0]])
        .output()
        .expect("cancel runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_for_runs(&cluster, store.as_ref(), &runs, Duration::from_secs(5)).await;
    let stopped_after = asked.elapsed();
    let run = store
        .get_run(&runs[0])
        .await
        .expect("get_run")
        .expect("run");
    assert_eq!(run.state, State::Cancelled);
    assert!(
        stopped_after < Duration::from_secs(3),
        "took {stopped_after:?}"
    );
    cluster.stop_workers();
}

/// Runs that only wait are parked by their worker (its slots are freed); that worker is then
/// killed, and signals sent by a third process (`smol-durable signal`) make a second worker
/// continue each run by replay: every run completes with its answer, and no agent call is paid
/// twice.
async fn parked_waiting_runs_continue_on_another_worker_after_a_signal(db: Db) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(tempfile::tempdir().expect("dir"), db, "0");
    let store = cluster.db.store().await;
    let runs = cluster.submit("waits.mjs", 3, 3).await;
    cluster.start_worker(3, 2.0);
    let started = Instant::now();
    loop {
        let mut parked = 0;
        for run_id in &runs {
            let run = store.get_run(run_id).await.expect("get").expect("run");
            let task = store
                .get_task(&run.task_id)
                .await
                .expect("get")
                .expect("task");
            if task.state == State::Pending && task.not_before == Some(i64::MAX) {
                parked += 1;
            }
        }
        if parked == runs.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {parked} parked\n{}",
            cluster.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill_worker(0);
    cluster.start_worker(3, 2.0);
    for (n, run_id) in runs.iter().enumerate() {
        let output = cluster
            .command(&["signal", run_id, "go", "--data", &n.to_string()])
            .output()
            .expect("signal runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let receipt: Value = serde_json::from_slice(&output.stdout).expect("receipt");
        assert_eq!(receipt["delivered"], json!(true));
    }
    wait_for_runs(&cluster, store.as_ref(), &runs, Duration::from_secs(30)).await;
    for (n, run_id) in runs.iter().enumerate() {
        let run = store.get_run(run_id).await.expect("get").expect("run");
        assert_eq!(run.state, State::Completed, "{run_id}");
        assert_eq!(run.result().map(|result| &result[1]), Some(&json!(n)));
    }
    let calls = cluster.calls();
    let mut per_step: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        *per_step.entry(call.step_id.as_str()).or_default() += 1;
    }
    assert_eq!(
        calls.len(),
        6,
        "two calls per run, none paid twice: {calls:?}"
    );
    assert!(per_step.values().all(|count| *count == 1), "{per_step:?}");
    cluster.stop_workers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_parked_waiting_runs_continue_on_another_worker_after_a_signal() {
    let dir = tempfile::tempdir().expect("dir");
    parked_waiting_runs_continue_on_another_worker_after_a_signal(Db::Sqlite(
        dir.path().join("shared.db"),
    ))
    .await;
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_parked_waiting_runs_continue_on_another_worker_after_a_signal() {
    parked_waiting_runs_continue_on_another_worker_after_a_signal(
        postgres_db("distributed waits").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workers_survive_kills() {
    let dir = tempfile::tempdir().expect("dir");
    workers_survive_kills(Db::Sqlite(dir.path().join("shared.db"))).await;
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_survive_kills() {
    workers_survive_kills(postgres_db("distributed kills").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_frozen_worker_cannot_overwrite_its_successor() {
    let dir = tempfile::tempdir().expect("dir");
    a_frozen_worker_cannot_overwrite_its_successor(Db::Sqlite(dir.path().join("shared.db"))).await;
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_frozen_worker_cannot_overwrite_its_successor() {
    a_frozen_worker_cannot_overwrite_its_successor(postgres_db("distributed zombie").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_from_another_process_stops_a_worker_run() {
    let dir = tempfile::tempdir().expect("dir");
    cancel_from_another_process_stops_a_worker_run(Db::Sqlite(dir.path().join("shared.db"))).await;
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel_from_another_process_stops_a_worker_run() {
    cancel_from_another_process_stops_a_worker_run(postgres_db("distributed cancel").await).await;
}

/// Every connection of the worker's database is terminated twice mid-run: the worker keeps
/// going once the server answers again, and every run completes with nothing paid twice
/// except calls in flight when a connection died.
#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_worker_recovers_when_its_connections_drop() {
    let db = postgres_db("distributed connection drop").await;
    let _serial = ONE_AT_A_TIME.lock().await;
    let Db::Postgres(url) = &db else {
        unreachable!()
    };
    let database = url.rsplit_once('/').expect("database").1.to_owned();
    let admin = PostgresStore::connect(&postgres_test_url("admin"))
        .await
        .expect("connect");
    let mut cluster = Cluster::new(tempfile::tempdir().expect("dir"), db, "0.01");
    let store = cluster.db.store().await;
    let runs = cluster.submit("ten.mjs", 20, 10).await;
    cluster.start_worker(4, KILL_TEST_LEASE_S);
    for cut in 1..=2 {
        wait_for_calls(&cluster, 50 * cut, Duration::from_secs(60)).await;
        let terminated: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(admin.pool())
        .await
        .expect("terminate");
        assert!(terminated > 0, "the worker had connections to cut");
    }
    wait_for_runs(&cluster, store.as_ref(), &runs, Duration::from_secs(120)).await;
    cluster.stop_workers();
    let calls = cluster.calls();
    let tally = check_runs(store.as_ref(), &runs, &calls, 2).await;
    assert!(
        tally.re_executed <= 8,
        "{} calls re-executed",
        tally.re_executed
    );
}
