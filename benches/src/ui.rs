//! The web inspector's table: `smol-durable ui` (the release binary beside this one) over a
//! store holding 100 000 runs and one run of 10 000 steps, on SQLite and on PostgreSQL.
//!
//! Rows: the runs list's first page and a page deep in the list (`before=`), the 10 000-step
//! run's page, and event → browser: the time from a stored event to its arrival on the run's
//! server-sent event stream, as a browser would receive it. Medians (and the worst of the
//! latency samples) over repeated requests, each a new connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable_core::store::{EventRow, NewEvent};
use smol_durable_core::{DurableStore, EventType, RunRequest, SubmitOptions};
use smol_durable_sqlite::{Durability, SqliteOptions, SqliteStore};

use crate::{engine, scripts};

/// The CLI binary: `SMOL_DURABLE_BIN`, else `smol-durable` beside this bench.
pub(crate) fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SMOL_DURABLE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()?.with_file_name("smol-durable");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "the ui and cli tables need the smol-durable binary: cargo build --release -p smol-durable-cli \
         (scripts/bench builds it), or set SMOL_DURABLE_BIN"
    )
}

/// `smol-durable ui --read-only` on `db`, killed when dropped.
struct Inspector {
    child: Child,
    port: u16,
}

impl Inspector {
    fn start(db: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(binary()?)
            .args(["--db", db, "ui", "--listen", "127.0.0.1:0", "--read-only"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut byte = [0_u8; 1];
        while !line.ends_with('\n') {
            if stdout.read(&mut byte)? == 0 {
                bail!("the inspector stopped before printing its URL");
            }
            line.push(byte[0] as char);
        }
        let port = line
            .trim()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .with_context(|| format!("no port in {line:?}"))?;
        Ok(Self { child, port })
    }

    /// `GET path`: its time to the last byte, and the body.
    fn get(&self, path: &str) -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let elapsed = started.elapsed();
        if !response.starts_with("HTTP/1.1 200") {
            bail!(
                "GET {path}: {}",
                response.lines().next().unwrap_or("no answer")
            );
        }
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((elapsed, body))
    }

    /// The median time of `GET path` over `times` requests (after one to warm up).
    fn median(&self, path: &str, times: usize) -> anyhow::Result<Duration> {
        self.get(path)?;
        let mut samples = Vec::with_capacity(times);
        for _ in 0..times {
            samples.push(self.get(path)?.0);
        }
        samples.sort();
        Ok(samples[samples.len() / 2])
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills `store` with `runs` queued root runs (eight submits at a time) and one completed run
/// of `steps` steps; the long run's id.
async fn fill(store: Arc<dyn DurableStore>, runs: u64, steps: u64) -> anyhow::Result<String> {
    let scripts = scripts();
    let engine = engine(store, &scripts)?;
    let long = engine
        .run(scripts.source("bench.mjs"), json!({ "steps": steps }))
        .await?;
    let mut submitted = 0;
    while submitted < runs {
        let batch = (runs - submitted).min(8);
        let submits = (0..batch).map(|n| {
            let request = RunRequest::new(
                scripts.source("bench.mjs"),
                json!({ "steps": 1, "n": submitted + n }),
            );
            engine.submit(request, SubmitOptions::default())
        });
        for submit in futures::future::join_all(submits).await {
            submit?;
        }
        submitted += batch;
    }
    Ok(long.run_id)
}

/// Event → browser: an event appended to the store, timed until it arrives on the run's
/// event stream; the median and the worst of `samples`.
async fn event_latency(
    inspector: &Inspector,
    store: &Arc<dyn DurableStore>,
    run_id: &str,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let port = inspector.port;
    let (sender, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    // Only events written from now on: after the run's last stored one.
    let mut last = 0;
    loop {
        let page = store.read_events(run_id, last, 1_000).await?;
        match page.last() {
            Some(event) => last = event.seq,
            None => break,
        }
    }
    // A reader thread stands in for the browser: it notes when each event's data arrives.
    let path = format!("/api/runs/{run_id}/events?after={last}");
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 65_536];
        let mut seen = String::new();
        loop {
            let Ok(read) = stream.read(&mut buffer) else {
                return;
            };
            if read == 0 {
                return;
            }
            let at = Instant::now();
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
            while let Some(start) = seen.find("bench-probe-") {
                let marker: String = seen[start..].chars().take_while(|c| *c != '"').collect();
                seen.drain(..start + marker.len());
                if sender.send((marker, at)).is_err() {
                    return;
                }
            }
        }
    });
    let run = store.get_run(run_id).await?.context("the long run")?;
    // The stream only sends events after the first poll: let it start.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let marker = format!("bench-probe-{n}");
        let written = Instant::now();
        store
            .append_events(&[EventRow::from(&NewEvent {
                event_id: smol_durable_core::new_id("evt"),
                run_id: run.run_id.clone(),
                root_run_id: run.root_run_id.clone(),
                attempt_id: None,
                step_id: None,
                event_type: EventType::Log,
                payload: json!({ "type": "workflow.log", "data": { "message": marker } }),
                created_at: 0,
            })])
            .await?;
        loop {
            let (arrived, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .context("an event did not arrive within 10 s")?
                .context("the stream closed")?;
            if arrived == marker {
                latencies.push(at.saturating_duration_since(written));
                break;
            }
        }
        // Writes land at random points of the stream's polling period.
        tokio::time::sleep(Duration::from_millis(37 + (n as u64 * 53) % 200)).await;
    }
    latencies.sort();
    Ok((
        latencies[latencies.len() / 2],
        latencies.last().copied().unwrap_or_default(),
    ))
}

/// The four rows of one store.
async fn rows(
    label: &str,
    db: &str,
    store: Arc<dyn DurableStore>,
    runs: u64,
    steps: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let long = fill(store.clone(), runs, steps).await?;
    eprintln!(
        "ui bench: {label} filled with {runs} runs and a {steps}-step run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let inspector = Inspector::start(db)?;
    let first = inspector.median("/", 20)?;
    // A page deep in the list: before the creation time of the run in the middle.
    let (_, middle) = inspector.get(&format!("/api/runs?limit=500&before={}", i64::MAX))?;
    let middle: serde_json::Value = serde_json::from_str(&middle)?;
    let before = middle[250]["createdAtMs"].as_i64().unwrap_or(i64::MAX);
    let deep = inspector.median(&format!("/?before={before}"), 20)?;
    let run_page = inspector.median(&format!("/runs/{long}"), 10)?;
    let (median, worst) = event_latency(&inspector, &store, &long, 20).await?;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!(
        "{:<34} {:<12} {:>10.1} {:>10}",
        "runs page 1",
        label,
        ms(first),
        "≤ 100"
    );
    println!(
        "{:<34} {:<12} {:>10.1} {:>10}",
        "runs page (before=)",
        label,
        ms(deep),
        "≤ 100"
    );
    println!(
        "{:<34} {:<12} {:>10.1} {:>10}",
        format!("run page, {steps} steps"),
        label,
        ms(run_page),
        "≤ 300"
    );
    println!(
        "{:<34} {:<12} {:>10.1} {:>10}",
        "event → browser (median)",
        label,
        ms(median),
        "≤ 1000"
    );
    println!(
        "{:<34} {:<12} {:>10.1} {:>10}",
        "event → browser (worst of 20)",
        label,
        ms(worst),
        "≤ 1000"
    );
    Ok(())
}

/// The table: SQLite, then PostgreSQL when `postgres` names a server.
pub async fn table(quick: bool, dir: &Path, postgres: Option<&str>) -> anyhow::Result<()> {
    let (runs, steps) = if quick {
        (10_000, 1_000)
    } else {
        (100_000, 10_000)
    };
    println!("\nweb inspector ({runs} runs; each request a new connection; median of 10–20)");
    println!(
        "{:<34} {:<12} {:>10} {:>10}",
        "row", "store", "ms", "target"
    );
    let path = dir.join("ui.db");
    // NORMAL durability fills the database faster; the inspector reads it as any other.
    let store = Arc::new(
        SqliteStore::open_with(
            &path,
            SqliteOptions::default().durability(Durability::Normal),
        )
        .await?,
    );
    rows("sqlite", &path.display().to_string(), store, runs, steps).await?;
    if let Some(url) = postgres {
        let server = crate::postgres::Server::connect(url).await?;
        let db = server.fresh_database("smol_durable_bench_ui").await?;
        let store = Arc::new(crate::postgres::store(&db).await?);
        rows("postgres", &db, store, runs, steps).await?;
    }
    Ok(())
}
