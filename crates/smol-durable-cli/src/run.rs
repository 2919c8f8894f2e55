//! `run` and `submit`: a new run (or a resumed one) from a script and the command line.

use std::io::IsTerminal;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use smol_durable::{Engine, ResumeOptions, RunOutput, RunRequest, SubmitOptions, WorkflowSource};

use crate::cli::{NewRunArgs, RunArgs, SubmitArgs};
use crate::output::pretty;
use crate::output::{errln, outln};
use crate::progress::Progress;
use crate::workflow_args;
use crate::Outcome;

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
    outln!(
        "{}",
        pretty(&json!({
            "task_id": submitted.task_id,
            "run_id": submitted.run_id,
            "state": submitted.state.as_str(),
        }))
    );
    if !submitted.created {
        errln!("note: this idempotency key was submitted before; that run is shown");
    }
    Ok(Outcome::Success)
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
                errln!(
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
                        errln!("{line}");
                    }
                } else if let Ok(line) = serde_json::to_string(&event) {
                    outln!("{line}");
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
    errln!("cancelling run {run_id}; press Ctrl-C again to exit at once");
    if let Err(error) = engine.cancel(&run_id).await {
        errln!("error: cannot cancel run {run_id}: {error}");
    }
    tokio::select! {
        _ = &mut join => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    errln!(
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
                outln!("{}", output.to_cli_text());
            }
            Ok(Outcome::Success)
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "run {run_id} failed; after fixing the cause, continue it with: \
             smol-durable run {script} --resume-run {run_id}"
        ))),
    }
}
