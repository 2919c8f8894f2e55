//! Engine and store benchmarks.
//!
//! ```sh
//! cargo run --release -p smol-durable-benches            # full table
//! cargo run --release -p smol-durable-benches -- --quick # smaller shapes
//! scripts/bench [--quick] [--postgres-only] [--js-only] [--waits-only] [--replay-only] [--ui-only]
//!               [--cli-only]
//!                                                         # the same plus PostgreSQL
//! ```
//!
//! The PostgreSQL table is printed when `SMOL_DURABLE_TEST_POSTGRES_URL` names a server;
//! `scripts/bench` starts a throwaway one.
//!
//! Each scenario runs in its own child process, under `strace -f -c -e trace=fsync,fdatasync`
//! when strace is installed, so fsyncs are counted per scenario. Providers answer at once: the
//! numbers are the engine's and the store's own cost per durable step. The disk of the machine
//! this project runs on flips between a fast and a slow fsync mode, so the table starts with a
//! probe of the current fsync latency; compare counts, and timings taken in one run.

mod cli;
mod js;
mod peers;
mod postgres;
mod ui;
mod waits;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use smol_durable_core::{DurableStore, Engine, MemoryStore, ResumeOptions, ScriptError};
use smol_durable_sqlite::{Durability, SqliteOptions, SqliteStore};
use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};

fn scripts() -> ScriptedEngine {
    ScriptedEngine::new().workflow("bench.mjs", |ctx| async move {
        let steps = ctx.args()["steps"].as_u64().unwrap_or(10);
        let fail_at_end = ctx.args()["failAtEnd"].as_bool().unwrap_or(false);
        let mut last = Value::Null;
        for i in 0..steps {
            last = ctx.agent(format!("step {i}"), Value::Null).await?;
        }
        if fail_at_end {
            return Err(ScriptError::thrown("stopping so the run can be resumed"));
        }
        Ok(last)
    })
}

fn engine(store: Arc<dyn DurableStore>, scripts: &ScriptedEngine) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::new(ScriptedProvider::new("bench")))
        .build()?)
}

/// What one scenario run reports to the driver.
struct Measured {
    steps: u64,
    elapsed: Duration,
    transactions: Option<u64>,
}

async fn open_store(
    kind: &str,
    path: &Path,
) -> anyhow::Result<(Arc<dyn DurableStore>, Option<Arc<SqliteStore>>)> {
    Ok(match kind {
        "memory" => (Arc::new(MemoryStore::new()), None),
        "sqlite-full" | "sqlite-normal" => {
            let durability = if kind == "sqlite-full" {
                Durability::Full
            } else {
                Durability::Normal
            };
            let store = Arc::new(
                SqliteStore::open_with(path, SqliteOptions::default().durability(durability))
                    .await?,
            );
            (store.clone(), Some(store))
        }
        other => bail!("unknown store {other}"),
    })
}

async fn scenario(name: &str, kind: &str, size: u64, path: &Path) -> anyhow::Result<Measured> {
    let scripts = scripts();
    let (store, sqlite) = open_store(kind, path).await?;
    let engine = engine(store, &scripts)?;
    let tx_before = sqlite.as_ref().map(|s| s.write_stats().transactions);
    let started = Instant::now();
    let steps = match name {
        "sequential" => {
            engine
                .run(scripts.source("bench.mjs"), json!({ "steps": size }))
                .await?;
            size
        }
        "concurrent" => {
            let runs =
                (0..size).map(|_| engine.run(scripts.source("bench.mjs"), json!({ "steps": 10 })));
            for output in futures::future::join_all(runs).await {
                output?;
            }
            size * 10
        }
        "store-only" => {
            // The store's share of a step, without the engine: claim, complete with a ledger row.
            let (store, _) = open_store(kind, path).await?;
            let run = store
                .create_run(smol_durable_core::store::NewRun::new(
                    smol_durable_core::store::ClaimScope::Local,
                    "owner_bench",
                    Default::default(),
                    json!({}),
                    1,
                ))
                .await?
                .run;
            for i in 0..size {
                let signature = smol_durable_core::StepSignature::agent(
                    "root",
                    "bench",
                    &format!("step {i}"),
                    &Value::Null,
                    None,
                    None,
                );
                let checkpoint = signature.base_checkpoint();
                let claim = smol_durable_core::steps::StepClaim {
                    run_id: &run.run_id,
                    root_run_id: &run.run_id,
                    kind: smol_durable_core::store::StepKind::Agent,
                    checkpoint_name: &checkpoint,
                    signature: &signature,
                    input: json!({}),
                    worker_id: "owner_bench",
                    lease_expires_at: i64::MAX,
                };
                let smol_durable_core::steps::Acquired::Claimed(row) =
                    smol_durable_core::steps::acquire_step(
                        store.as_ref(),
                        &claim,
                        smol_durable_core::steps::KnownRow::Absent,
                        1,
                    )
                    .await?
                else {
                    bail!("not claimed");
                };
                let usage = smol_durable_core::Usage::tokens(1, 1);
                let entry = smol_durable_core::store::LedgerEntry::new(
                    &run.run_id,
                    &run.run_id,
                    &row.step_id,
                    smol_durable_core::store::LedgerSource::AgentStep,
                    row.step_id.clone(),
                    Some(&usage),
                    1,
                );
                smol_durable_core::steps::complete_fenced(
                    store.as_ref(),
                    &row.step_id,
                    1,
                    json!({"output": "x"}),
                    vec![entry],
                    1,
                )
                .await?;
            }
            size
        }
        "replay-setup" | "replay-setup-90" => {
            let steps = if name == "replay-setup" {
                size
            } else {
                ninety_percent(size)
            };
            let failed = engine
                .run(
                    scripts.source("bench.mjs"),
                    json!({ "steps": steps, "failAtEnd": true }),
                )
                .await;
            if failed.is_ok() {
                bail!("the setup run should fail at its end");
            }
            steps
        }
        "offline-replay" => {
            // Both evaluations of `Engine::replay` (it replays twice, to check determinism).
            let run = setup_run(&engine).await?;
            let report = engine
                .replay(&run.run_id, smol_durable_core::ReplayOptions::new())
                .await?;
            if !report.is_identical() || report.replayed as u64 != size {
                bail!(
                    "the replay should be identical: {:?}, {} replayed",
                    report.verdict,
                    report.replayed
                );
            }
            size
        }
        "fork-90" => {
            let (copied, elapsed) = fork_ninety(engine.store().clone(), &scripts, size).await?;
            return Ok(Measured {
                steps: copied,
                elapsed,
                transactions: None,
            });
        }
        "replay" | "replay-90" => {
            let run = setup_run(&engine).await?;
            let scripts = scripts.workflow("bench.mjs", |ctx| async move {
                let steps = ctx.args()["steps"].as_u64().unwrap_or(10);
                let mut last = Value::Null;
                for i in 0..steps {
                    last = ctx.agent(format!("step {i}"), Value::Null).await?;
                }
                Ok(last)
            });
            let output = engine
                .resume(&run.run_id, ResumeOptions::new())
                .await?
                .join()
                .await?;
            drop(scripts);
            if output.attempt != 2 {
                bail!("expected attempt 2, got {}", output.attempt);
            }
            if name == "replay" {
                size
            } else {
                ninety_percent(size)
            }
        }
        other => bail!("unknown scenario {other}"),
    };
    let elapsed = started.elapsed();
    let transactions = sqlite
        .as_ref()
        .zip(tx_before)
        .map(|(s, before)| s.write_stats().transactions - before);
    Ok(Measured {
        steps,
        elapsed,
        transactions,
    })
}

/// 90% of a run's steps: where the fork scenario forks, and the replay it is compared with.
fn ninety_percent(size: u64) -> u64 {
    size * 9 / 10
}

/// From a fork's request to its first live call, forking the setup run of `steps` steps
/// before its last tenth: the copies of 90% of its steps written with the fork's creation,
/// then replayed. How many were copied, and the time.
async fn fork_ninety(
    store: Arc<dyn DurableStore>,
    scripts: &ScriptedEngine,
    steps: u64,
) -> anyhow::Result<(u64, Duration)> {
    let first_call = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::clone(&first_call);
    let provider = ScriptedProvider::new("bench").on_call(move |_| {
        let _ = seen.set(Instant::now());
    });
    let engine = Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::new(provider))
        .build()?;
    let run = setup_run(&engine).await?;
    let copied = ninety_percent(steps);
    let point = smol_durable_core::ForkPoint::Step(u32::try_from(copied + 1)?);
    let started = Instant::now();
    let handle = engine
        .fork(
            &run.run_id,
            smol_durable_core::ForkOptions::new().before_step(point),
        )
        .await?;
    while first_call.get().is_none() {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = first_call
        .get()
        .map(|at| at.duration_since(started))
        .context("first call")?;
    engine.cancel(handle.run_id()).await?;
    let _ = handle.join().await;
    Ok((copied, elapsed))
}

/// The ratios the replay and fork rows are judged by (issue N4's targets), from each
/// scenario's elapsed time.
fn print_replay_ratios(elapsed: impl Fn(&str) -> f64) {
    let ratios = [
        (
            "offline replay (two evaluations) ÷ resume replay, same run",
            elapsed("offline-replay") / elapsed("replay"),
            "≤ 1",
        ),
        (
            "fork at 90% (copy + replay to the first live call) ÷ resume replay of 90%",
            elapsed("fork-90") / elapsed("replay-90"),
            "≤ 2",
        ),
    ];
    println!();
    for (label, ratio, target) in ratios {
        println!("{label:<76} {ratio:>6.2}× {target:>6}");
    }
}

/// The failed run a `*-setup` scenario left.
async fn setup_run(engine: &Engine) -> anyhow::Result<smol_durable_core::RunRecord> {
    engine
        .list_runs(&Default::default())
        .await?
        .into_iter()
        .next()
        .context("setup run")
}

/// Runs the JavaScript engine scenarios in this process and prints their table.
fn js_table(quick: bool) -> anyhow::Result<()> {
    let runtime = two_threads()?;
    let (cold_runs, calls, parked) = if quick {
        (20, 1_000, 20)
    } else {
        (100, 10_000, 100)
    };
    let cold = runtime.block_on(js::cold_start(cold_runs))?;
    let isolated = runtime.block_on(js::cold_start_isolated(cold_runs))?;
    let trip = runtime.block_on(js::round_trip(calls))?;
    let bare = runtime.block_on(js::plain_await(calls))?;
    let step = runtime.block_on(js::engine_step(calls))?;
    let memory = runtime.block_on(js::parked_memory(parked))?;
    println!();
    println!(
        "{:<44} {:>14} {:>12}",
        "JavaScript engine (boa)", "measured", "target"
    );
    println!(
        "{:<44} {:>11.2} ms {:>12}",
        format!("cold start, median of {cold_runs}"),
        cold.as_secs_f64() * 1e3,
        "≤ 5 ms"
    );
    println!(
        "{:<44} {:>11.2} ms {:>12}",
        format!("  isolated mode (child process), median of {cold_runs}"),
        isolated.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<44} {:>11.2} ms {:>12}",
        "  isolation overhead per run",
        isolated.saturating_sub(cold).as_secs_f64() * 1e3,
        "≤ 10 ms"
    );
    println!(
        "{:<44} {:>11.1} µs {:>12}",
        format!("agent() round trip, mean of {calls}"),
        trip.as_secs_f64() * 1e6,
        "≤ 60 µs"
    );
    println!(
        "{:<44} {:>11.1} µs {:>12}",
        "  of which a plain `await` in boa",
        bare.as_secs_f64() * 1e6,
        ""
    );
    println!(
        "{:<44} {:>11.1} µs {:>12}",
        "durable agent() step through the engine",
        step.as_secs_f64() * 1e6,
        ""
    );
    println!(
        "{:<44} {:>11.0} KB {:>12}",
        format!("memory per parked run, {parked} runs"),
        memory as f64 / 1024.0,
        "≤ 1 MB"
    );
    Ok(())
}

fn child_main(args: &[String]) -> anyhow::Result<()> {
    let get = |flag: &str| -> anyhow::Result<String> {
        let at = args
            .iter()
            .position(|a| a == flag)
            .context(format!("missing {flag}"))?;
        args.get(at + 1)
            .cloned()
            .context(format!("missing value for {flag}"))
    };
    let name = get("--scenario")?;
    let kind = get("--store")?;
    let size: u64 = get("--size")?.parse()?;
    let path = PathBuf::from(get("--db")?);
    let runtime = two_threads()?;
    let measured = runtime.block_on(scenario(&name, &kind, size, &path))?;
    println!(
        "RESULT {}",
        json!({
            "steps": measured.steps,
            "elapsedUs": measured.elapsed.as_micros() as u64,
            "transactions": measured.transactions,
        })
    );
    Ok(())
}

struct Row {
    scenario: String,
    store: String,
    steps: u64,
    elapsed_us: u64,
    fsyncs: Option<u64>,
    transactions: Option<u64>,
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a scenario untraced for its timings and, when strace is present, once more under strace
/// for its fsync count (tracing slows every thread down, so its timings are not used).
fn measure(
    name: &str,
    kind: &str,
    size: u64,
    db: &Path,
    trace: bool,
    setup: Option<&str>,
) -> anyhow::Result<Row> {
    // The database with its write-ahead log: the setup's last transactions may be only there.
    let fresh = |suffix: &str| -> anyhow::Result<PathBuf> {
        let copy = db.with_extension(suffix);
        if db.exists() {
            std::fs::copy(db, &copy)?;
        }
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        if wal.exists() {
            std::fs::copy(&wal, format!("{}-wal", copy.display()))?;
        }
        Ok(copy)
    };
    if let Some(setup) = setup {
        run_child(setup, "sqlite-normal", size, db, false)?;
    }
    let mut row = run_child(name, kind, size, &fresh("timed.db")?, false)?;
    if trace {
        row.fsyncs = run_child(name, kind, size, &fresh("traced.db")?, true)?.fsyncs;
    }
    Ok(row)
}

fn run_child(name: &str, kind: &str, size: u64, db: &Path, trace: bool) -> anyhow::Result<Row> {
    let exe = std::env::current_exe()?;
    let trace_file = db.with_extension("strace");
    let mut command = if trace {
        let mut command = Command::new("strace");
        command
            .args([
                "-f",
                "--seccomp-bpf",
                "-c",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
            ])
            .arg(&trace_file)
            .arg(&exe);
        command
    } else {
        Command::new(&exe)
    };
    command
        .args([
            "--scenario",
            name,
            "--store",
            kind,
            "--size",
            &size.to_string(),
            "--db",
        ])
        .arg(db);
    let output = command.output().context("run scenario")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "scenario {name} on {kind} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result: Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .context("no result")
        .and_then(|text| Ok(serde_json::from_str(text)?))?;
    let fsyncs = if trace {
        Some(count_fsyncs(&std::fs::read_to_string(&trace_file)?))
    } else {
        None
    };
    Ok(Row {
        scenario: name.to_owned(),
        store: kind.to_owned(),
        steps: result["steps"].as_u64().unwrap_or(0),
        elapsed_us: result["elapsedUs"].as_u64().unwrap_or(0),
        fsyncs,
        transactions: result["transactions"].as_u64(),
    })
}

/// Sums the `calls` column of strace's summary for fsync and fdatasync.
fn count_fsyncs(summary: &str) -> u64 {
    summary
        .lines()
        .filter(|line| line.trim_end().ends_with("fsync") || line.trim_end().ends_with("fdatasync"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            fields.get(3).and_then(|calls| calls.parse::<u64>().ok())
        })
        .sum()
}

/// Median latency of write+fsync on this disk right now.
fn probe_fsync(dir: &Path) -> anyhow::Result<Duration> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("probe"))?;
    let mut samples = Vec::new();
    for _ in 0..21 {
        file.write_all(b"probe")?;
        let started = Instant::now();
        file.sync_data()?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(js::SCRIPT_HOST_ARG) {
        // The child of the isolated-engine scenario.
        smol_durable_boa::serve_script_host();
        return Ok(());
    }
    if args.iter().any(|a| a == "--scenario") {
        return child_main(&args);
    }
    if args.iter().any(|a| a == "--peer-shape") {
        return peers::main(&args);
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--postgres-only") {
        return postgres_table(quick);
    }
    if args.iter().any(|a| a == "--js-only") {
        return js_table(quick);
    }
    if args.iter().any(|a| a == "--ui-only") {
        println!(
            "disk: median fsync {:.2} ms",
            probe_fsync(tempfile::tempdir()?.path())?.as_secs_f64() * 1e3
        );
        return ui_table(quick);
    }
    if args.iter().any(|a| a == "--cli-only") {
        println!(
            "disk: median fsync {:.2} ms",
            probe_fsync(tempfile::tempdir()?.path())?.as_secs_f64() * 1e3
        );
        return cli::table(quick, tempfile::tempdir()?.path());
    }
    if args.iter().any(|a| a == "--waits-only") {
        println!(
            "disk: median fsync {:.2} ms",
            probe_fsync(tempfile::tempdir()?.path())?.as_secs_f64() * 1e3
        );
        return waits_table(quick);
    }
    let trace = strace_available();
    let dir = tempfile::tempdir()?;
    let fsync = probe_fsync(dir.path())?;
    let mode = if fsync < Duration::from_millis(1) {
        "fast"
    } else {
        "slow"
    };
    println!(
        "disk: median fsync {:.2} ms ({mode} mode){}",
        fsync.as_secs_f64() * 1e3,
        if trace {
            ""
        } else {
            "; strace not found, fsyncs not counted"
        }
    );
    let (sequential, concurrent, replay) = if quick {
        (200, 20, 1_000)
    } else {
        (1_000, 100, 10_000)
    };
    // `--replay-only`: the replay, offline-replay and fork rows alone.
    let replay_only = args.iter().any(|a| a == "--replay-only");
    let mut rows = Vec::new();
    for (index, (name, kind, size)) in [
        ("sequential", "memory", sequential),
        ("sequential", "sqlite-full", sequential),
        ("sequential", "sqlite-normal", sequential),
        ("concurrent", "memory", concurrent),
        ("concurrent", "sqlite-full", concurrent),
        ("concurrent", "sqlite-normal", concurrent),
    ]
    .into_iter()
    .enumerate()
    .filter(|_| !replay_only)
    {
        let db = dir.path().join(format!("bench-{index}.db"));
        rows.push(measure(name, kind, size, &db, trace, None)?);
    }
    // Replays, offline replays and forks of one failed run, each on a copy of its database.
    for (index, (name, setup)) in [
        ("replay", "replay-setup"),
        ("offline-replay", "replay-setup"),
        ("replay-90", "replay-setup-90"),
        ("fork-90", "replay-setup"),
    ]
    .into_iter()
    .enumerate()
    {
        let db = dir.path().join(format!("replay-{index}.db"));
        let trace = trace && name != "fork-90";
        rows.push(measure(
            name,
            "sqlite-full",
            replay,
            &db,
            trace,
            Some(setup),
        )?);
    }

    println!(
        "{:<14} {:<14} {:>7} {:>10} {:>9} {:>10} {:>11} {:>9}",
        "scenario", "store", "steps", "total ms", "µs/step", "steps/s", "fsync/step", "tx/step"
    );
    for row in &rows {
        let steps = row.steps.max(1) as f64;
        let per_step =
            |n: Option<u64>| n.map_or("n/a".to_owned(), |n| format!("{:.3}", n as f64 / steps));
        println!(
            "{:<14} {:<14} {:>7} {:>10.1} {:>9.1} {:>10.0} {:>11} {:>9}",
            row.scenario,
            row.store,
            row.steps,
            row.elapsed_us as f64 / 1e3,
            row.elapsed_us as f64 / steps,
            steps / (row.elapsed_us.max(1) as f64 / 1e6),
            per_step(row.fsyncs),
            per_step(row.transactions),
        );
    }
    print_replay_ratios(|scenario| {
        rows.iter()
            .find(|row| row.scenario == scenario)
            .map_or(0.0, |row| row.elapsed_us as f64)
    });
    if replay_only {
        return Ok(());
    }
    cli::table(quick, dir.path())?;
    js_table(quick)?;
    waits_table(quick)?;
    postgres_table(quick)?;
    ui_table(quick)
}

/// A runtime of two threads, as many as this machine has cores.
fn two_threads() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The web inspector's table on SQLite (and PostgreSQL when a server is configured).
fn ui_table(quick: bool) -> anyhow::Result<()> {
    let runtime = two_threads()?;
    let url = std::env::var(smol_durable_testkit::POSTGRES_URL_VAR).ok();
    let dir = tempfile::tempdir()?;
    runtime.block_on(ui::table(quick, dir.path(), url.as_deref()))
}

/// The waits table: signal → continue latency on SQLite (and PostgreSQL when a server is
/// configured), and memory per waiting run.
fn waits_table(quick: bool) -> anyhow::Result<()> {
    let runtime = two_threads()?;
    let url = std::env::var(smol_durable_testkit::POSTGRES_URL_VAR).ok();
    runtime.block_on(waits::table(quick, url.as_deref()))
}

/// The PostgreSQL scenarios, when a server is configured.
fn postgres_table(quick: bool) -> anyhow::Result<()> {
    let Ok(url) = std::env::var(smol_durable_testkit::POSTGRES_URL_VAR) else {
        println!(
            "\nPostgreSQL: skipped ({} is not set; scripts/bench starts a server)",
            smol_durable_testkit::POSTGRES_URL_VAR
        );
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(postgres::table(&url, quick))?;
    println!(
        "\n{:<16} {:>7} {:>10} {:>9} {:>10} {:>9} {:>13}",
        "postgres", "steps", "total ms", "µs/step", "steps/s", "tx/step", "wal sync/step"
    );
    for row in &rows {
        let steps = row.steps.max(1) as f64;
        let timed = row.timed_steps.max(1) as f64;
        let secs = row.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<16} {:>7} {:>10.1} {:>9.1} {:>10.0} {:>9.3} {:>13.3}",
            row.scenario,
            row.timed_steps,
            secs * 1e3,
            secs * 1e6 / timed,
            timed / secs,
            row.transactions as f64 / steps,
            row.wal_syncs as f64 / steps,
        );
    }
    print_replay_ratios(|scenario| {
        rows.iter()
            .find(|row| row.scenario == scenario)
            .map_or(0.0, |row| row.elapsed.as_secs_f64())
    });
    Ok(())
}
