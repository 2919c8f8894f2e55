//! One function per command. Results go to stdout; everything for people goes to stderr.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use smol_durable::store::{RunFilter, RunRecord, State};
use smol_durable::{
    Engine, ResumeOptions, RunOutput, RunRequest, SubmitOptions, WorkerOptions, WorkflowSource,
};

use crate::cli::{Format, HistoryAction, HistoryArgs, NewRunArgs, RunArgs, SubmitArgs, WorkerArgs};
use crate::progress::Progress;
use crate::workflow_args;

/// How a command ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Interrupted with Ctrl-C; the run stays resumable.
    Interrupted,
}

/// The script, checked options and arguments of a new run (`run` and `submit`).
fn new_run_request(
    options: &NewRunArgs,
    provider: &str,
    cli_args: Map<String, Value>,
) -> anyhow::Result<RunRequest> {
    if options.budget_allowance == Some(0) {
        bail!("--budget-allowance must be a positive number of output tokens, got 0");
    }
    if options.max_parallel_agents == Some(0) {
        bail!("--max-parallel-agents must be at least 1, got 0");
    }
    let mut args = match &options.args_from_file {
        Some(path) => workflow_args::from_file(path)?,
        None => Map::new(),
    };
    args.extend(cli_args);
    let source = WorkflowSource::from_file(&options.script)
        .with_context(|| format!("cannot read workflow {}", options.script.display()))?;
    let cwd = std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    let mut request = RunRequest::new(source, Value::Object(args))
        .provider(provider)
        .cwd(cwd);
    if let Some(tokens) = options.budget_allowance {
        request = request.budget_total(tokens);
    }
    if let Some(cap) = options.max_parallel_agents {
        request = request.max_parallel_agents(cap);
    }
    Ok(request)
}

/// `submit`: queue a run for workers and print its ids and state.
pub async fn submit(
    engine: &Engine,
    options: SubmitArgs,
    cli_args: Map<String, Value>,
) -> anyhow::Result<Outcome> {
    if options.max_attempts == 0 {
        bail!("--max-attempts must be at least 1, got 0");
    }
    let request = new_run_request(
        &options.new_run,
        &options.providers.agent_provider,
        cli_args,
    )?;
    let mut submit = SubmitOptions::new().max_attempts(options.max_attempts);
    if let Some(key) = options.idempotency_key {
        submit = submit.idempotency_key(key);
    }
    let submitted = engine.submit(request, submit).await?;
    println!(
        "{}",
        pretty(&json!({
            "task_id": submitted.task_id,
            "run_id": submitted.run_id,
            "state": submitted.state.as_str(),
        }))
    );
    if !submitted.created {
        eprintln!("note: this idempotency key was submitted before; that run is shown");
    }
    Ok(Outcome::Success)
}

/// `worker`: execute submitted runs until SIGINT or SIGTERM, then stop gracefully (a second
/// signal exits at once; runs in flight are then taken over when their leases expire).
pub async fn worker(engine: &Engine, options: WorkerArgs) -> anyhow::Result<Outcome> {
    if options.concurrency == 0 {
        bail!("--concurrency must be at least 1, got 0");
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(options.concurrency)
            .shutdown_grace(Duration::from_secs(options.shutdown_grace)),
    );
    eprintln!(
        "worker {} executing up to {} runs at once; SIGINT or SIGTERM stops it",
        worker.owner_id(),
        options.concurrency
    );
    let worker_ended = async {
        while !worker.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        // Only a failure ends a worker nobody stopped: report it instead of idling.
        () = worker_ended => {
            worker.join().await?;
            bail!("the worker stopped unexpectedly");
        }
    }
    eprintln!(
        "stopping: no new runs; runs in flight get {} s, then go back to the queue \
         (signal again to exit at once)",
        options.shutdown_grace
    );
    worker.shutdown();
    let join = worker.join();
    tokio::select! {
        report = join => {
            let report = report?;
            eprintln!(
                "worker stopped: {} claimed, {} completed, {} failed, {} cancelled, {} parked, {} handed back",
                report.claimed,
                report.completed,
                report.failed,
                report.cancelled,
                report.parked,
                report.released
            );
            Ok(Outcome::Success)
        }
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted),
        _ = terminate.recv() => Ok(Outcome::Interrupted),
    }
}

/// `run`: start (or resume) a run, wait for it, print the smol-wf JSON or the events.
pub async fn run(
    engine: &Engine,
    options: RunArgs,
    cli_args: Map<String, Value>,
) -> anyhow::Result<Outcome> {
    let request = new_run_request(
        &options.new_run,
        &options.providers.agent_provider,
        cli_args,
    )?;
    let script = options.new_run.script.display().to_string();
    let budget_allowance = options.new_run.budget_allowance;
    let mut handle = match &options.resume_run {
        Some(run_id) => {
            if request
                .args
                .as_object()
                .is_some_and(|args| !args.is_empty())
            {
                eprintln!(
                    "note: a resumed run keeps the arguments it was started with; the given \
                     workflow arguments are ignored"
                );
            }
            let mut resume = ResumeOptions::new().source(request.source);
            if let Some(tokens) = budget_allowance {
                resume = resume.budget_total(tokens);
            }
            engine.resume(run_id, resume).await?
        }
        None => engine.start(request).await?,
    };
    let run_id = handle.run_id().to_owned();
    // `--events` prints every event on stdout; otherwise a terminal on stderr gets progress
    // lines, and a pipe gets nothing.
    let show_progress = !options.events && std::io::stderr().is_terminal();
    let mut events = if options.events || show_progress {
        handle.events()
    } else {
        None
    };
    let mut progress = Progress::new(budget_allowance);
    let print_events = async {
        if let Some(events) = events.as_mut() {
            while let Some(event) = events.recv().await {
                if show_progress {
                    if let Some(line) = progress.line(&event) {
                        eprintln!("{line}");
                    }
                } else if let Ok(line) = serde_json::to_string(&event) {
                    println!("{line}");
                }
            }
        }
    };
    let join = handle.join();
    tokio::pin!(join);
    tokio::select! {
        (result, ()) = async { tokio::join!(&mut join, print_events) } => {
            return finish(result, &run_id, &script, options.events);
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("cancelling run {run_id}; press Ctrl-C again to exit at once");
    if let Err(error) = engine.cancel(&run_id).await {
        eprintln!("error: cannot cancel run {run_id}: {error}");
    }
    tokio::select! {
        _ = &mut join => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "run {run_id} stopped; continue it with: smol-durable run {script} --resume-run {run_id}"
    );
    Ok(Outcome::Interrupted)
}

fn finish(
    result: Result<RunOutput, smol_durable::Error>,
    run_id: &str,
    script: &str,
    events_only: bool,
) -> anyhow::Result<Outcome> {
    match result {
        Ok(output) => {
            if !events_only {
                println!("{}", output.to_cli_text());
            }
            Ok(Outcome::Success)
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "run {run_id} failed; after fixing the cause, continue it with: \
             smol-durable run {script} --resume-run {run_id}"
        ))),
    }
}

/// `history delete`: finished root runs in the chosen states (or all), with everything under
/// them. Unfinished runs are never deleted.
async fn delete_runs(
    engine: &Engine,
    states: &[String],
    all: bool,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    let states = if all {
        vec![State::Completed, State::Failed, State::Cancelled]
    } else {
        let parsed = parse_states(states)?;
        if let Some(state) = parsed.iter().find(|s| !s.is_terminal()) {
            bail!("runs that are {state} cannot be deleted; cancel them first, or choose completed, failed or cancelled");
        }
        parsed
    };
    let filter = RunFilter {
        states,
        roots_only: true,
        ..RunFilter::default()
    };
    let runs = engine.list_runs(&filter).await?;
    let mut done = 0;
    let mut refused = 0;
    for run in &runs {
        if !dry_run {
            // A run resumed since it was listed is not finished any more: say so, go on.
            if let Err(error) = engine.delete(&run.run_id).await {
                eprintln!("error: run {} was not deleted: {error}", run.run_id);
                refused += 1;
                continue;
            }
        }
        println!("{}", run.run_id);
        done += 1;
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    eprintln!("{verb} {done} run(s)");
    if refused > 0 {
        bail!("{refused} run(s) could not be deleted");
    }
    Ok(Outcome::Success)
}

fn parse_states(states: &[String]) -> anyhow::Result<Vec<State>> {
    states
        .iter()
        .map(|text| match State::parse(text) {
            State::Unknown(state) => bail!(
                "unknown --state {state:?}; use pending, running, completed, failed or cancelled"
            ),
            state => Ok(state),
        })
        .collect()
}

/// `history`: runs newest first, one run in detail, or `history delete`.
pub async fn history(engine: &Engine, options: HistoryArgs) -> anyhow::Result<Outcome> {
    if let Some(HistoryAction::Delete {
        state,
        all,
        dry_run,
    }) = &options.action
    {
        return delete_runs(engine, state, *all, *dry_run).await;
    }
    if let Some(run_id) = &options.run_id {
        let status = engine.status(run_id).await?;
        let steps = engine.store().load_steps(run_id).await?;
        let mut detail = run_json(&status.run);
        detail["attempts"] = json!(status.attempts);
        detail["steps"] = json!(steps);
        match options.output {
            Format::Json => println!("{}", pretty(&detail)),
            Format::Table => {
                print_table(std::slice::from_ref(&status.run));
                println!();
                println!("{:<4} {:<10} {:<10} CHECKPOINT", "#", "KIND", "STATE");
                for (index, step) in steps.iter().enumerate() {
                    println!(
                        "{:<4} {:<10} {:<10} {}",
                        index + 1,
                        step.kind.as_str(),
                        step.state.as_str(),
                        step.checkpoint_name
                    );
                }
            }
        }
        return Ok(Outcome::Success);
    }
    let filter = RunFilter {
        states: parse_states(&options.state)?,
        roots_only: true,
        name_contains: options.name.clone(),
        limit: Some(options.limit),
        ..RunFilter::default()
    };
    let runs = engine.list_runs(&filter).await?;
    match options.output {
        Format::Json => {
            let runs: Vec<Value> = runs.iter().map(run_json).collect();
            println!("{}", pretty(&Value::Array(runs)));
        }
        Format::Table => print_table(&runs),
    }
    Ok(Outcome::Success)
}

/// `status`: the run's state, attempts and outcome, by run id or task id.
pub async fn status(engine: &Engine, id: &str) -> anyhow::Result<Outcome> {
    let status = engine.status(id).await?;
    let mut summary = run_json(&status.run);
    summary["attempts"] = json!(status.attempts.len());
    println!("{}", pretty(&summary));
    Ok(Outcome::Success)
}

/// `cancel`: request cancellation; a running owner notices at its next heartbeat.
pub async fn cancel(engine: &Engine, run_id: &str) -> anyhow::Result<Outcome> {
    use smol_durable::store::CancelRequest;
    let message = match engine.cancel(run_id).await? {
        CancelRequest::Requested => {
            format!("cancellation of run {run_id} requested; its owner stops at its next heartbeat")
        }
        CancelRequest::CancelledPending => format!("run {run_id} cancelled"),
        CancelRequest::AlreadyFinished(state) => {
            format!("run {run_id} already finished ({state}); nothing to cancel")
        }
        CancelRequest::NotFound => bail!("workflow run {run_id} was not found; check --db"),
        other => format!("run {run_id}: {other:?}"),
    };
    eprintln!("{message}");
    Ok(Outcome::Success)
}

/// `events`: stored events as JSON lines; `--follow` waits for more until the run finishes.
pub async fn events(engine: &Engine, run_id: &str, follow: bool) -> anyhow::Result<Outcome> {
    // Fails with a clear "not found" before printing anything.
    engine.status(run_id).await?;
    let mut after = 0;
    let mut last_pass = !follow;
    loop {
        let batch = engine.events(run_id, after, 500).await?;
        for event in &batch {
            println!("{}", event.payload);
            after = after.max(event.seq);
        }
        if batch.len() == 500 {
            continue;
        }
        if last_pass {
            return Ok(Outcome::Success);
        }
        // Once the run has ended, one more pass reads what it wrote before the state check.
        last_pass = engine.status(run_id).await?.run.state.is_terminal();
        if !last_pass {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A run as `history -o json` and `status` print it (smol-wf's camelCase names, `runID`).
fn run_json(run: &RunRecord) -> Value {
    json!({
        "runID": run.run_id,
        "taskID": run.task_id,
        "rootRunID": run.root_run_id,
        "parentRunID": run.parent_run_id,
        "state": run.state.as_str(),
        "name": workflow_name(run),
        "scriptPath": run.workflow.script_path,
        "args": run.args,
        "budgetAllowance": run.budget_total,
        "budgetSpent": run.budget_spent,
        "results": run.completed_payload,
        "error": run.failure_reason,
        "createdAt": run.created_at,
        "updatedAt": run.updated_at,
    })
}

fn workflow_name(run: &RunRecord) -> String {
    run.workflow
        .metadata
        .as_ref()
        .and_then(|meta| meta.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn print_table(runs: &[RunRecord]) {
    println!(
        "{:<31} {:<10} {:<24} {:>8} CREATED",
        "RUN", "STATE", "NAME", "TOKENS"
    );
    for run in runs {
        println!(
            "{:<31} {:<10} {:<24} {:>8} {}",
            run.run_id,
            run.state.as_str(),
            workflow_name(run),
            run.budget_spent,
            utc(run.created_at)
        );
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC (Howard Hinnant's
/// days-to-civil algorithm; a date library for one column would be a heavy dependency).
fn utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_677_088_975), "2026-11-26 07:11:28");
        assert_eq!(utc(-1_000), "1969-12-31 23:59:59");
    }
}
