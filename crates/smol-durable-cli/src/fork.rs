//! `fork`: a new run from copies of another run's completed steps, run here like `run`, or
//! queued for workers.

use std::path::PathBuf;

use serde_json::{json, Value};
use smol_durable_core::{Engine, ForkOptions, ForkPoint, SubmitOptions};

use crate::cli::ForkArgs;
use crate::output::{errln, outln, pretty};
use crate::run::{read_workflow, resume_command, signal_command, Watch};
use crate::stop_signals::Signals;
use crate::workflow_args::WorkflowArgs;
use crate::{Invocation, Outcome};

/// `fork RUN …`.
pub async fn fork(
    engine: &Engine,
    options: &ForkArgs,
    workflow_args: WorkflowArgs,
    invocation: &Invocation<'_>,
) -> anyhow::Result<Outcome> {
    // By run id, or by task id (its root run).
    let source_run = engine.status(&options.run_id).await?.run;
    let source_id = source_run.run_id.as_str();
    let mut fork = ForkOptions::new();
    if let Some(point) = &options.before_step {
        let point: ForkPoint = point.parse().unwrap_or_else(|never| match never {});
        fork = fork.before_step(point);
    }
    if let Some(script) = &options.script {
        fork = fork.source(read_workflow(script)?);
    }
    let given = workflow_args.read()?;
    if !given.is_empty() {
        // Laid over the source's arguments: a fork usually changes one of them.
        let mut args = match &source_run.args {
            Value::Object(args) => args.clone(),
            Value::Null => serde_json::Map::new(),
            other => anyhow::bail!(
                "run {source_id} was started with arguments that are not an object \
                 ({other}); --args-<name> cannot be laid over them"
            ),
        };
        args.extend(given);
        fork = fork.args(Value::Object(args));
    }
    if let Some(provider) = &options.providers.agent_provider {
        fork = fork.provider(provider.clone());
    }
    if let Some(tokens) = options.budget_allowance {
        fork = fork.budget_total(tokens);
    }
    for (alias, selector) in &options.providers.model_map {
        fork = fork.model_alias(alias, selector);
    }
    if options.submit {
        let submitted = engine
            .submit_fork(source_id, fork, SubmitOptions::new())
            .await?;
        outln!(
            "{}",
            pretty(&json!({
                "runID": submitted.run_id,
                "taskId": submitted.task_id,
                "state": submitted.state.as_str(),
                "forkedFrom": source_id,
            }))
        );
        return Ok(Outcome::Success);
    }
    let signals = Signals::new()?;
    let handle = engine.fork(source_id, fork).await?;
    let run_id = handle.run_id().to_owned();
    let copied = engine
        .status(&run_id)
        .await
        .ok()
        .and_then(|status| status.run.workflow.forked_from)
        .map_or(0, |origin| origin.copied_steps);
    errln!(
        "note: run {run_id} forked from {source_id} with {copied} completed step{} copied",
        if copied == 1 { "" } else { "s" }
    );
    let script = match (&options.script, &source_run.workflow.script_path) {
        (Some(script), _) => script.clone(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => PathBuf::from("<the fork's script>"),
    };
    let watch = Watch {
        events_only: options.events,
        budget_allowance: options.budget_allowance.or(source_run.budget_total),
        resume_command: resume_command(
            invocation,
            &script,
            &options.providers,
            options.save_raw_sessions.as_deref(),
            &run_id,
        ),
        signal_command: signal_command(invocation),
    };
    watch.follow(engine, handle, signals).await
}
