//! `run` and `submit`: a new run (or a resumed one) from a script and the command line.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use smol_durable_core::{
    Engine, Error, EventType, ResumeOptions, RunOutput, RunRequest, SubmitOptions, WorkflowEvent,
    WorkflowSource,
};

use crate::cli::{NewRunArgs, ProviderArgs, RunArgs, SubmitArgs};
use crate::output::{errln, outln, pretty};
use crate::progress::Progress;
use crate::stop_signals::Signals;
use crate::workflow_args::WorkflowArgs;
use crate::{Invocation, Outcome};

/// smol-wf's words when a run is asked to stop.
const CANCELLING: &str = "cancellation requested; finishing in-flight session export if needed...";

/// A workflow script given on the command line.
pub(crate) fn read_workflow(path: &Path) -> anyhow::Result<WorkflowSource> {
    WorkflowSource::from_file(path)
        .with_context(|| format!("cannot read workflow {}", path.display()))
}

/// The script, checked options and arguments of a new run (`run` and `submit`).
fn new_run_request(
    options: &NewRunArgs,
    provider: &str,
    args: Map<String, Value>,
) -> anyhow::Result<RunRequest> {
    let source = read_workflow(&options.script)?;
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
        request = request.max_parallel_agents(usize::try_from(cap).unwrap_or(usize::MAX));
    }
    Ok(request)
}

/// `submit`: queue a run for workers and print its ids and state.
pub async fn submit(
    engine: &Engine,
    options: &SubmitArgs,
    workflow_args: WorkflowArgs,
) -> anyhow::Result<Outcome> {
    if options.max_attempts == 0 {
        bail!("--max-attempts must be at least 1, got 0");
    }
    let provider = options.providers.provider();
    let request = new_run_request(&options.new_run, provider, workflow_args.read()?)?;
    let mut submit = SubmitOptions::new().max_attempts(options.max_attempts);
    if let Some(key) = &options.idempotency_key {
        submit = submit.idempotency_key(key.clone());
    }
    let submitted = engine.submit(request, submit).await?;
    outln!(
        "{}",
        pretty(&json!({
            "runID": submitted.run_id,
            "taskId": submitted.task_id,
            "state": submitted.state.as_str(),
        }))
    );
    if !submitted.created {
        errln!("note: this idempotency key was submitted before; that run is shown");
    }
    if options.providers.agent_provider.is_none() {
        errln!(
            "note: the run's agents use the offline debug provider (fake answers); pass \
             --agent-provider to give it a real one"
        );
    }
    Ok(Outcome::Success)
}

/// `run`: start (or resume) a run, wait for it, print the smol-wf JSON or the events. SIGINT,
/// SIGTERM and SIGHUP cancel it cooperatively (it stays resumable); a second signal exits at
/// once.
pub async fn run(
    engine: &Engine,
    options: &RunArgs,
    workflow_args: WorkflowArgs,
    invocation: &Invocation<'_>,
) -> anyhow::Result<Outcome> {
    let signals = Signals::new()?;
    let args = workflow_args.read()?;
    let mut request = new_run_request(&options.new_run, options.providers.provider(), args)?;
    if options.detach_on_wait {
        request = request.detach_on_wait();
    }
    let handle = match &options.resume_run {
        Some(run_id) => {
            let given_args = request
                .args
                .as_object()
                .is_some_and(|args| !args.is_empty());
            if given_args {
                errln!(
                    "note: a resumed run keeps the arguments it was started with; the given \
                     workflow arguments are ignored"
                );
            }
            note_other_script(engine, run_id, &options.new_run.script).await?;
            let mut resume = ResumeOptions::new().source(request.source);
            if let Some(tokens) = options.new_run.budget_allowance {
                resume = resume.budget_total(tokens);
            }
            if options.detach_on_wait {
                resume = resume.detach_on_wait();
            }
            engine.resume(run_id, resume).await?
        }
        None => engine.start(request).await?,
    };
    let run_id = handle.run_id().to_owned();
    let watch = Watch {
        events_only: options.events,
        budget_allowance: options.new_run.budget_allowance,
        resume_command: resume_command(
            invocation,
            &options.new_run.script,
            &options.providers,
            options.save_raw_sessions.as_deref(),
            &run_id,
        ),
        signal_command: signal_command(invocation),
    };
    watch.follow(engine, handle, signals).await
}

/// How `run` (and `signal --resume`) shows a run it executes, and what it tells the user.
pub struct Watch {
    /// `--events`: every event as a JSON line on stdout, nothing else.
    pub events_only: bool,
    /// The allowance, for the progress lines.
    pub budget_allowance: Option<u64>,
    /// The command that continues the run.
    pub resume_command: String,
    /// The words that start a `signal` command on the same database.
    pub signal_command: Vec<String>,
}

impl Watch {
    /// Waits for the run, showing its events; SIGINT, SIGTERM and SIGHUP cancel it
    /// cooperatively (it stays resumable); a second signal exits at once.
    pub async fn follow(
        &self,
        engine: &Engine,
        mut handle: smol_durable_core::RunHandle,
        mut signals: Signals,
    ) -> anyhow::Result<Outcome> {
        let run_id = handle.run_id().to_owned();
        let resume_command = self.resume_command.as_str();
        let mut events = handle.events();
        let mut view = RunView {
            events_only: self.events_only,
            progress: std::io::stderr()
                .is_terminal()
                .then(|| Progress::new(self.budget_allowance)),
            signal_command: self.signal_command.clone(),
        };
        let print_events = async {
            if let Some(events) = events.as_mut() {
                while let Some(event) = events.recv().await {
                    view.show(&event);
                }
            }
        };
        let join = handle.join();
        tokio::pin!(join);
        let signal = tokio::select! {
            (result, ()) = async { tokio::join!(&mut join, print_events) } => {
                return report(engine, result, self.events_only, &run_id, resume_command).await;
            }
            signal = signals.next() => signal,
        };
        // Events the run emitted before the signal still reach the screen (`[phase]`, `[log]`).
        show_received(&mut events, &mut view);
        errln!("{CANCELLING}");
        if let Err(error) = engine.cancel(&run_id).await {
            errln!("error: cannot cancel run {run_id}: {error}");
        }
        tokio::select! {
            result = &mut join => {
                show_received(&mut events, &mut view);
                // The run may have ended another way before it saw the cancellation:
                // completed, or failed for a reason of its own. Then that is what happened.
                if !matches!(result, Err(Error::Cancelled)) {
                    return report(engine, result, self.events_only, &run_id, resume_command)
                        .await;
                }
            }
            // A second signal: exit now; the run's lease lets a resume take it over.
            _ = signals.next() => show_received(&mut events, &mut view),
        }
        errln!("error: {}", Error::Cancelled);
        errln!("hint: the run stays resumable: {resume_command}");
        Ok(Outcome::Interrupted(signal))
    }
}

/// Shows the events received and not shown yet (once the run has ended, all of them: its
/// events are delivered before it ends).
fn show_received(
    events: &mut Option<tokio::sync::mpsc::UnboundedReceiver<WorkflowEvent>>,
    view: &mut RunView,
) {
    if let Some(events) = events.as_mut() {
        while let Ok(event) = events.try_recv() {
            view.show(&event);
        }
    }
}

/// What `run` prints while a run goes on.
struct RunView {
    /// `--events`: every event as a JSON line on stdout, nothing else.
    events_only: bool,
    /// A terminal on stderr: progress lines besides `[phase]` and `[log]`.
    progress: Option<Progress>,
    /// The words that start a `signal` command on this database.
    signal_command: Vec<String>,
}

impl RunView {
    fn show(&mut self, event: &WorkflowEvent) {
        if self.events_only {
            if let Ok(line) = serde_json::to_string(event) {
                // A reader that went away (`| head`) ends the stream; the run goes on.
                let _ = crate::output::stdout_line(line);
            }
            // Said on stderr too: stdout is for tools, and this one is for the person.
            if let Some(line) = unreached_line(event) {
                errln!("{line}");
            }
            return;
        }
        if let Some(line) = smol_wf_line(event) {
            errln!("{line}");
        }
        if let Some(line) = unreached_line(event) {
            errln!("{line}");
        }
        for line in crate::waits::wait_lines(event, &self.signal_command) {
            errln!("{line}");
        }
        if let Some(line) = self.progress.as_mut().and_then(|p| p.line(event)) {
            errln!("{line}");
        }
    }
}

/// smol-wf's stderr line for an event: `[phase] <name>` (then the options, as they are when a
/// string, else as compact JSON) and `[log] <message>`.
pub fn smol_wf_line(event: &WorkflowEvent) -> Option<String> {
    let text = |key: &str| event.data.get(key).and_then(Value::as_str).unwrap_or("");
    match event.event_type {
        EventType::Phase => Some(match event.data.get("options") {
            None => format!("[phase] {}", text("name")),
            Some(Value::String(options)) => format!("[phase] {} {options}", text("name")),
            Some(options) => format!("[phase] {} {options}", text("name")),
        }),
        EventType::Log => Some(format!("[log] {}", text("message"))),
        _ => None,
    }
}

/// The warning of a run that completed without reaching completed steps of earlier attempts
/// (or of the run it was forked from).
fn unreached_line(event: &WorkflowEvent) -> Option<String> {
    if event.event_type != EventType::StepsUnreached {
        return None;
    }
    let message = event.data.get("message").and_then(Value::as_str)?;
    Some(format!(
        "warning: {message} (the script or its arguments changed; `smol-durable replay` shows \
         where)"
    ))
}

/// The end of a run that was not interrupted here: its result on stdout, or its error and what
/// to do about it on stderr.
pub(crate) async fn report(
    engine: &Engine,
    result: Result<RunOutput, Error>,
    events_only: bool,
    run_id: &str,
    resume_command: &str,
) -> anyhow::Result<Outcome> {
    let error = match result {
        Ok(output) => {
            if !events_only {
                outln!("{}", result_text(&output));
            }
            return Ok(Outcome::Success);
        }
        Err(Error::Detached { .. }) => {
            // For scripts: which run waits (stdout), and what to do about it (stderr).
            if !events_only {
                outln!(
                    "{}",
                    pretty(&serde_json::json!({ "runID": run_id, "state": "waiting" }))
                );
            }
            errln!(
                "note: run {run_id} waits for a signal; it was handed back and this process \
                 ends: send the signal (above) with --resume to continue it here, or let a \
                 worker continue it, or: {resume_command}"
            );
            return Ok(Outcome::Waiting);
        }
        Err(error) => error,
    };
    errln!("error: {error}");
    if matches!(error, Error::Cancelled) {
        errln!("hint: the run was cancelled; it stays resumable: {resume_command}");
        return Ok(Outcome::Failed);
    }
    match budget_left(engine, run_id).await {
        Some((spent, total)) if spent >= total => {
            let more = total.saturating_mul(2).max(spent.saturating_add(1_000));
            errln!(
                "hint: the run spent {spent} of its {total} output tokens; continue it with a \
                 larger allowance: {resume_command} --budget-allowance {more}"
            );
        }
        _ => errln!("hint: after fixing the cause, continue the run with: {resume_command}"),
    }
    Ok(Outcome::Failed)
}

/// Output tokens spent and the allowance, when the run has one.
async fn budget_left(engine: &Engine, run_id: &str) -> Option<(u64, u64)> {
    let status = engine.status(run_id).await.ok()?;
    let total = status.run.budget_total?;
    let spent = engine.store().budget_spent(run_id).await.ok()?;
    Some((spent, total))
}

/// Says so when a run is resumed with another script than the one it was started with.
async fn note_other_script(engine: &Engine, run_id: &str, script: &Path) -> anyhow::Result<()> {
    let status = match engine.status(run_id).await {
        Ok(status) => status,
        // `resume` reports a missing run with the right message.
        Err(_) => return Ok(()),
    };
    let Some(stored) = &status.run.workflow.script_path else {
        return Ok(());
    };
    let same = |path: &Path| std::fs::canonicalize(path).ok();
    let stored_path = Path::new(stored);
    if stored_path != script && same(stored_path).is_none_or(|real| Some(real) != same(script)) {
        errln!(
            "note: run {run_id} was started with {stored}; it continues with {}: steps whose \
             calls changed run again",
            script.display()
        );
    }
    Ok(())
}

/// `smol-durable --db <db> [script flags] signal`: how a `signal` command for this process's
/// database starts.
pub fn signal_command(invocation: &Invocation<'_>) -> Vec<String> {
    let mut words: Vec<String> = vec![
        "smol-durable".into(),
        "--db".into(),
        invocation.database.as_flag(),
    ];
    words.push("signal".into());
    words
}

/// The command that continues this run, quoted for a POSIX shell: the same binary, database,
/// script engine and provider flags; the run keeps its arguments and budget.
pub(crate) fn resume_command(
    invocation: &Invocation<'_>,
    script: &Path,
    providers: &ProviderArgs,
    save_raw_sessions: Option<&Path>,
    run_id: &str,
) -> String {
    let mut words: Vec<String> = vec![
        "smol-durable".into(),
        "--db".into(),
        invocation.database.as_flag(),
    ];
    words.extend(invocation.script_flags.iter().cloned());
    let mut flag = |name: &str, value: Option<String>| {
        words.push(name.to_owned());
        words.extend(value);
    };
    flag("run", Some(script.display().to_string()));
    flag("--resume-run", Some(run_id.to_owned()));
    if let Some(provider) = &providers.agent_provider {
        flag("--agent-provider", Some(provider.clone()));
    }
    if let Some(command) = &providers.agent_command {
        flag("--agent-command", Some(command.clone()));
    }
    for (alias, selector) in &providers.model_map {
        flag("--model-map", Some(format!("{alias}:{selector}")));
    }
    if let Some(tries) = providers.agent_max_attempts {
        flag("--agent-max-attempts", Some(tries.to_string()));
    }
    if let Some(backoff) = providers.agent_backoff_ms {
        flag("--agent-backoff-ms", Some(backoff.to_string()));
    }
    if let Some(dir) = save_raw_sessions {
        flag("--save-raw-sessions", Some(dir.display().to_string()));
    }
    crate::output::shell_line(&words)
}

/// A finished run as smol-wf printed it: `tokenUsage`, `runID`, `results`, in that order (tools
/// read it positionally).
pub(crate) fn result_text(output: &RunOutput) -> String {
    crate::table::Json::from(
        crate::table::Object::new()
            .with("tokenUsage", serde_json::json!(output.token_usage))
            .with("runID", Value::String(output.run_id.clone()))
            .with("results", output.result.clone()),
    )
    .pretty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_keeps_smol_wf_s_key_order() {
        let output: RunOutput = serde_json::from_value(serde_json::json!({
            "taskId": "task_1",
            "runId": "run_1",
            "attempt": 1,
            "result": { "b": 1, "a": [true] },
            "tokenUsage": { "inputTokens": 1, "outputTokens": 2, "totalTokens": 3 },
        }))
        .expect("output");
        let text = result_text(&output);
        assert_eq!(
            text,
            "{\n  \"tokenUsage\": {\n    \"inputTokens\": 1,\n    \"outputTokens\": 2,\n    \"totalTokens\": 3\n  },\n  \"runID\": \"run_1\",\n  \"results\": {\n    \"a\": [\n      true\n    ],\n    \"b\": 1\n  }\n}"
        );
    }
}
