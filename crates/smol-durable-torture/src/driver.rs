//! The driver: victims, kills, resumes, and the summary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use smol_durable_boa::BoaEngine;
use smol_durable_core::{DebugProvider, Engine, MemoryStore, SignalOptions, WorkflowSource};

use crate::checks::{check_signals, read_log, RunWatch};
use crate::signaller::{tick_key, TICK, TICKS};

/// Options of `smol-durable-torture drive`.
#[derive(Debug, Args)]
pub(crate) struct DriveOptions {
    /// The database: a SQLite file (created) or a `postgres://` URL (a fresh schema is used).
    #[arg(long)]
    db: String,
    /// Workflow runs (the five workflows in turn).
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// Kills aimed at each run (a kill that comes after the run finished is not made).
    #[arg(long, default_value_t = 3)]
    kills_per_run: u32,
    /// Seed of the kill moments (and of injected faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of store operations that fail retryably in the victims.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Latest kill moment after a victim starts, in milliseconds.
    #[arg(long, default_value_t = 600)]
    max_kill_delay_ms: u64,
    /// Where the call log and victims' stderr go (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// One drive's totals; `violations` must be empty.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    backend: String,
    fault_rate: f64,
    runs: u32,
    kills: u32,
    resumes: u32,
    failed_exits: u32,
    provider_calls: u64,
    re_executed: u64,
    elapsed: Duration,
    pub violations: Vec<String>,
}

impl Summary {
    pub(crate) fn header() -> String {
        format!(
            "{:<10} {:>6} {:>5} {:>6} {:>8} {:>12} {:>7} {:>12} {:>11} {:>8}",
            "backend",
            "faults",
            "runs",
            "kills",
            "resumes",
            "failed exits",
            "calls",
            "re-executed",
            "violations",
            "seconds"
        )
    }

    pub(crate) fn row(&self) -> String {
        format!(
            "{:<10} {:>5.0}% {:>5} {:>6} {:>8} {:>12} {:>7} {:>12} {:>11} {:>8.1}",
            self.backend,
            self.fault_rate * 100.0,
            self.runs,
            self.kills,
            self.resumes,
            self.failed_exits,
            self.provider_calls,
            self.re_executed,
            self.violations.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

struct Victims<'a> {
    options: &'a DriveOptions,
    schema: Option<String>,
    log: PathBuf,
    dir: PathBuf,
    started: u32,
    signallers: u32,
}

impl Victims<'_> {
    fn spawn(&mut self, action: &[&str]) -> anyhow::Result<Child> {
        self.started += 1;
        let stderr =
            std::fs::File::create(self.dir.join(format!("victim-{}.stderr", self.started)))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("victim")
            .args(["--db", &self.options.db])
            .arg("--log")
            .arg(&self.log)
            .args(["--fault-rate", &self.options.fault_rate.to_string()])
            .args(["--seed", &self.options.seed.to_string()])
            .args(action)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(schema) = &self.schema {
            command.args(["--pg-schema", schema]);
        }
        Ok(command.spawn()?)
    }

    /// Starts a signaller for `run_id`; its stderr goes to `signaller-N.stderr`.
    fn spawn_signaller(&mut self, run_id: &str) -> anyhow::Result<Child> {
        self.signallers += 1;
        let stderr = std::fs::File::create(
            self.dir
                .join(format!("signaller-{}.stderr", self.signallers)),
        )?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("signaller")
            .args(["--db", &self.options.db])
            .args(["--run", run_id])
            .args(["--fault-rate", &self.options.fault_rate.to_string()])
            .args(["--seed", &self.options.seed.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(schema) = &self.schema {
            command.args(["--pg-schema", schema]);
        }
        Ok(command.spawn()?)
    }

    fn stderr_of_last(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("victim-{}.stderr", self.started)))
            .unwrap_or_default()
    }
}

/// Waits for `child` to exit for at most `limit`; `None` if it is still running.
fn wait_at_most(
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The result of an uninterrupted run of `workflow` with `args` (in memory, same provider
/// answers).
async fn uninterrupted(workflow: &str, args: &Value) -> anyhow::Result<Value> {
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()?;
    let source = WorkflowSource::from_file(crate::workflows_dir().join(workflow))?;
    let handle = engine
        .start(smol_durable_core::RunRequest::new(source, args.clone()))
        .await?;
    if workflow == crate::WAITS_WORKFLOW {
        for n in 0..TICKS {
            let send = SignalOptions::default().idempotency_key(tick_key(n));
            engine.signal(handle.run_id(), TICK, json!(n), send).await?;
        }
    }
    Ok(handle.join().await?.result)
}

pub(crate) async fn drive(options: DriveOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let temp;
    let dir: PathBuf = match &options.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = std::env::temp_dir().join(smol_durable_core::new_id("torture"));
            std::fs::create_dir_all(&temp)?;
            temp
        }
    };
    let postgres = crate::stores::is_postgres(&options.db);
    let schema = postgres.then(|| smol_durable_core::new_id("torture"));
    // Opening it first creates the schema before any victim races to.
    let store = crate::stores::open(&options.db, schema.as_deref()).await?;
    let mut victims = Victims {
        options: &options,
        schema,
        log: dir.join("calls.log"),
        dir: dir.clone(),
        started: 0,
        signallers: 0,
    };
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut summary = Summary {
        backend: if postgres { "postgres" } else { "sqlite" }.to_owned(),
        fault_rate: options.fault_rate,
        ..Summary::default()
    };
    let mut expected: HashMap<(String, String), Value> = HashMap::new();
    for index in 0..options.runs {
        let workflow = crate::WORKFLOWS[index as usize % crate::WORKFLOWS.len()];
        let args = json!({ "topic": format!("topic {}", index % 3) });
        let key = (workflow.to_owned(), args.to_string());
        let want = match expected.get(&key) {
            Some(value) => value.clone(),
            None => {
                let value = uninterrupted(workflow, &args).await?;
                expected.insert(key, value.clone());
                value
            }
        };
        let outcome = torture_one(
            &mut victims,
            store.as_ref(),
            workflow,
            &args,
            &want,
            &mut rng,
        )
        .await
        .with_context(|| format!("run {index} ({workflow})"))?;
        summary.runs += 1;
        summary.kills += outcome.kills;
        summary.resumes += outcome.resumes;
        summary.failed_exits += outcome.failed_exits;
        summary.provider_calls += outcome.calls;
        summary.re_executed += outcome.re_executed;
        summary.violations.extend(
            outcome
                .violations
                .into_iter()
                .map(|v| format!("{workflow}: {v}")),
        );
    }
    summary.elapsed = started.elapsed();
    if options.work_dir.is_none() && summary.violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

#[derive(Debug, Default)]
struct Outcome {
    kills: u32,
    resumes: u32,
    failed_exits: u32,
    calls: u64,
    re_executed: u64,
    violations: Vec<String>,
}

/// Every failed exit is a violation; after this many in one run the run is given up.
const MAX_FAILED_EXITS: u32 = 5;

/// A victim that neither finishes nor is killed within this is hung.
const HANG_LIMIT: Duration = Duration::from_secs(120);

async fn torture_one(
    victims: &mut Victims<'_>,
    store: &dyn smol_durable_core::DurableStore,
    workflow: &str,
    args: &Value,
    expected: &Value,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let args_text = args.to_string();
    let mut child = victims.spawn(&["--start", workflow, "--args", &args_text])?;
    let run_id = first_line(&mut child).with_context(|| {
        format!(
            "the first victim did not report its run: {}",
            victims.stderr_of_last()
        )
    })?;
    let run = store
        .get_run(&run_id)
        .await?
        .with_context(|| format!("run {run_id} is not in the database"))?;
    let task_id = run.task_id;
    let mut watch = RunWatch::default();
    let mut kills_left = victims.options.kills_per_run;
    let waits = workflow == crate::WAITS_WORKFLOW;
    let mut signaller = if waits {
        Some(victims.spawn_signaller(&run_id)?)
    } else {
        None
    };
    loop {
        // The signaller is among the kills: a coin decides whether it dies with this round.
        if let Some(sender) = signaller.as_mut() {
            if kills_left > 0 && rng.bool() && sender.try_wait()?.is_none() {
                std::thread::sleep(Duration::from_millis(rng.u64(0..=100)));
                sender.kill()?;
                sender.wait()?;
                outcome.kills += 1;
                *sender = victims.spawn_signaller(&run_id)?;
            }
        }
        let status = if kills_left > 0 {
            kills_left -= 1;
            let delay = Duration::from_millis(rng.u64(0..=victims.options.max_kill_delay_ms));
            match wait_at_most(&mut child, delay)? {
                Some(status) => Some(status),
                None => {
                    child.kill()?;
                    child.wait()?;
                    outcome.kills += 1;
                    None
                }
            }
        } else {
            match wait_at_most(&mut child, HANG_LIMIT)? {
                Some(status) => Some(status),
                None => {
                    child.kill()?;
                    child.wait()?;
                    outcome
                        .violations
                        .push(format!("a victim of run {run_id} hung"));
                    return Ok(outcome);
                }
            }
        };
        if let Some(status) = status {
            if status.success() {
                break;
            }
            // Kills are the only interruptions planned; retryable faults must be absorbed.
            outcome.failed_exits += 1;
            outcome.violations.push(format!(
                "run {run_id}: a victim failed ({status}): {}",
                victims.stderr_of_last().trim()
            ));
            if outcome.failed_exits > MAX_FAILED_EXITS {
                return Ok(outcome);
            }
        }
        let calls = read_log(&victims.log)?;
        let violations = watch
            .after_interruption(store, &task_id, &calls, child.id())
            .await?;
        outcome.violations.extend(violations);
        outcome.resumes += 1;
        child = victims.spawn(&["--resume", &run_id])?;
    }
    if let Some(mut sender) = signaller {
        // Its ticks were all consumed (the run completed), so it is done or about to be: a
        // killed-and-restarted one may still be re-sending duplicates.
        match wait_at_most(&mut sender, HANG_LIMIT)? {
            Some(status) if status.success() => {}
            Some(status) => outcome
                .violations
                .push(format!("run {run_id}: the signaller failed ({status})")),
            None => {
                sender.kill()?;
                sender.wait()?;
                outcome
                    .violations
                    .push(format!("run {run_id}: the signaller hung"));
            }
        }
        outcome
            .violations
            .extend(check_signals(store, &run_id, TICKS).await?);
    }
    let calls = read_log(&victims.log)?;
    let (total, repeated, violations) = watch
        .finish(store, &task_id, &run_id, expected, &calls)
        .await?;
    outcome.calls = total;
    outcome.re_executed = repeated;
    outcome.violations.extend(violations);
    Ok(outcome)
}

/// The run id a victim prints first.
fn first_line(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let run_id = line.trim().to_owned();
    if run_id.is_empty() {
        let status = child.wait()?;
        bail!("the victim exited ({status}) before starting its run");
    }
    Ok(run_id)
}
