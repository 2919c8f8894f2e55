//! The CLI's own cost per step: `smol-durable run` of a sequential script on a fresh SQLite
//! file (the default `Durability::Full`), with each script engine, as a user runs it — the
//! whole process (start, migrations, the `debug` provider's answers, exit) timed by wall clock
//! and by the CPU time it used. A 10-step run beside each row gives the marginal cost of a step
//! without the process start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A workflow of `args.steps` sequential agent calls.
const SCRIPT: &str = r#"export const meta = { name: "sequential", description: "steps in a row" };
let last = null;
for (let i = 0; i < Number(args.steps); i++) last = await agent(`step ${i}`);
export default last;
"#;

/// Wall and CPU time of one `smol-durable run`.
struct Process {
    wall: Duration,
    cpu: Duration,
}

/// CPU time (user + system) of the children this process has waited for, from
/// `/proc/self/stat` (`cutime`, `cstime`; clock ticks of 10 ms).
fn children_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').context("a /proc/self/stat line")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("a cutime field")?.parse()?)
    };
    // Fields 16 and 17 of stat(5); `after` starts at field 3.
    let total = ticks(13)? + ticks(14)?;
    Ok(Duration::from_millis(total * 10))
}

fn run(binary: &Path, dir: &Path, engine: &str, steps: u64) -> anyhow::Result<Process> {
    let script = dir.join("sequential.mjs");
    std::fs::write(&script, SCRIPT)?;
    let db = dir.join(format!("cli-{engine}-{steps}.db"));
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    let status = Command::new(binary)
        .arg("run")
        .arg(&script)
        .arg("--db")
        .arg(&db)
        .args([
            "--script-engine",
            engine,
            "--args-steps",
            &steps.to_string(),
        ])
        .stdout(Stdio::null())
        .status()?;
    let wall = started.elapsed();
    if !status.success() {
        bail!("smol-durable run ({engine}, {steps} steps) failed: {status}");
    }
    Ok(Process {
        wall,
        cpu: children_cpu()?.saturating_sub(cpu_before),
    })
}

/// Prints the CLI table.
pub fn table(quick: bool, dir: &Path) -> anyhow::Result<()> {
    let binary = crate::ui::binary()?;
    let steps = if quick { 200 } else { 1_000 };
    println!(
        "\n{:<26} {:>6} {:>11} {:>11} {:>17} {:>17}",
        "cli (SQLite, Full)",
        "steps",
        "ms/step",
        "CPU ms/step",
        "ms/step w/o start",
        "CPU w/o start"
    );
    for engine in ["isolated", "in-process"] {
        // The best of three: the process is short, and other work on the machine is noise.
        let best = |steps: u64| -> anyhow::Result<Process> {
            let mut runs = (0..3)
                .map(|_| run(&binary, dir, engine, steps))
                .collect::<anyhow::Result<Vec<_>>>()?;
            runs.sort_by_key(|process| process.wall);
            runs.into_iter().next().context("three runs")
        };
        let (short, long) = (best(10)?, best(steps)?);
        let per = |duration: Duration, n: u64| duration.as_secs_f64() * 1e3 / n as f64;
        let marginal =
            |long: Duration, short: Duration| per(long.saturating_sub(short), steps - 10);
        println!(
            "{:<26} {:>6} {:>11.3} {:>11.3} {:>17.3} {:>17.3}",
            format!("run --script-engine {engine}"),
            steps,
            per(long.wall, steps),
            per(long.cpu, steps),
            marginal(long.wall, short.wall),
            marginal(long.cpu, short.cpu),
        );
    }
    Ok(())
}
