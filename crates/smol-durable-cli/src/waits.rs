//! Humans in the loop: `signal` (answer a waiting run, optionally continuing it here), `waits`
//! (what is waiting for whom), and the `[wait]` lines `run` prints when a run starts waiting.

use std::io::Read;

use anyhow::Context;
use serde_json::{json, Value};
use smol_durable_core::store::{State, WaitFilter};
use smol_durable_core::{
    rfc3339_ms, Engine, Error, EventType, OpenWait, ResumeOptions, SignalOptions, WorkflowEvent,
};

use crate::cli::{Format, SignalArgs, WaitsArgs};
use crate::inspect::resume_words;
use crate::output::{errln, outln, pretty, shell_line};
use crate::run::Watch;
use crate::stop_signals::Signals;
use crate::table::{humanize, now_ms, Table};
use crate::{Invocation, Outcome};

/// `signal`: sends the signal and prints the receipt; with `--resume`, then continues the run
/// here.
pub async fn signal(
    engine: &Engine,
    options: &SignalArgs,
    invocation: &Invocation<'_>,
) -> anyhow::Result<Outcome> {
    let payload = payload(options)?;
    let mut send = SignalOptions::default();
    if let Some(key) = &options.idempotency_key {
        send = send.idempotency_key(key.clone());
    }
    // Watched before anything happens, so Ctrl-C during --resume cancels cooperatively.
    let signals = options.resume.then(Signals::new).transpose()?;
    let sent = engine
        .signal(&options.run_id, &options.name, payload, send)
        .await;
    let receipt = match sent {
        Ok(receipt) => receipt,
        Err(error @ Error::InvalidState { .. }) => {
            errln!("error: {error}");
            let root = match engine.status(&options.run_id).await {
                Ok(status) => engine.status(&status.run.root_run_id).await.ok(),
                Err(_) => None,
            };
            if let Some(root) = root {
                if matches!(root.run.state, State::Failed | State::Cancelled) {
                    let mut resume = resume_words(invocation.database, &root.run);
                    resume.push("--detach-on-wait".into());
                    errln!(
                        "hint: resume it first (it waits again, with the same deadline), then \
                         send the signal: {}",
                        shell_line(&resume)
                    );
                }
            }
            return Ok(Outcome::Failed);
        }
        Err(error) => return Err(error.into()),
    };
    let mut shown = serde_json::to_value(&receipt)?;
    shown["runId"] = json!(options.run_id);
    shown["name"] = json!(options.name);
    let Some(signals) = signals else {
        outln!("{}", pretty(&shown));
        return Ok(Outcome::Success);
    };
    errln!("{}", serde_json::to_string(&shown)?);
    let status = engine.status(&options.run_id).await?;
    let root = status.run.root_run_id.clone();
    let root_run = engine.status(&root).await?.run;
    let handle = match engine.resume(&root, ResumeOptions::new().no_wait()).await {
        Ok(handle) => handle,
        Err(Error::RunBusy { owner, .. }) => {
            errln!("note: run {root} is being continued by {owner}; it takes the signal there");
            return Ok(Outcome::Success);
        }
        Err(error) => return Err(error.into()),
    };
    let watch = Watch {
        events_only: options.events,
        budget_allowance: None,
        resume_command: shell_line(&resume_words(invocation.database, &root_run)),
        signal_command: crate::run::signal_command(invocation),
    };
    watch.follow(engine, handle, signals).await
}

/// The payload `--data` or `--data-file` gives (`-`: stdin), or null.
fn payload(options: &SignalArgs) -> anyhow::Result<Value> {
    let (text, origin) = match (&options.data, &options.data_file) {
        (Some(data), _) if data == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the payload from stdin")?;
            (text, "stdin".to_owned())
        }
        (Some(data), _) => (data.clone(), "--data".to_owned()),
        (None, Some(path)) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --data-file {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, None) => return Ok(Value::Null),
    };
    serde_json::from_str(&text).with_context(|| {
        format!("the payload from {origin} is not JSON (strings need quotes: '\"yes\"')")
    })
}

/// `waits`: the open waits, oldest first.
pub async fn waits(engine: &Engine, options: &WaitsArgs) -> anyhow::Result<Outcome> {
    let mut filter = WaitFilter::default();
    if let Some(run_id) = &options.run {
        filter.task_id = Some(engine.status(run_id).await?.run.task_id);
    }
    let waits = engine.waits(&filter).await?;
    match options.output.unwrap_or(Format::Table) {
        Format::Json => {
            let items: Vec<Value> = waits.iter().map(wait_json).collect();
            outln!("{}", pretty(&Value::Array(items)));
        }
        Format::Table => {
            if waits.is_empty() {
                errln!("no run is waiting");
                return Ok(Outcome::Success);
            }
            let now = now_ms();
            let mut table =
                Table::new(&["RUN ID", "WAITS FOR", "DESCRIPTION", "DEADLINE", "SINCE"]);
            for wait in &waits {
                table.push(vec![
                    wait.run_id.clone(),
                    wait.names.join(" | "),
                    one_line(wait.description.as_deref().unwrap_or_default(), 60),
                    wait.deadline.map_or_else(|| "none".to_owned(), rfc3339_ms),
                    humanize(now, wait.since),
                ]);
            }
            for line in table.lines() {
                outln!("{line}");
            }
        }
    }
    Ok(Outcome::Success)
}

/// An open wait as `waits -o json` and the inspector's API show it.
pub(crate) fn wait_json(wait: &OpenWait) -> Value {
    json!({
        "runId": wait.run_id,
        "rootRunId": wait.root_run_id,
        "stepId": wait.step_id,
        "names": wait.names,
        "description": wait.description,
        "schema": wait.schema,
        "deadline": wait.deadline.map(rfc3339_ms),
        "since": rfc3339_ms(wait.since),
    })
}

/// The `[wait]` lines for an event: a wait starting (what it waits for, and the command that
/// answers it) or ending.
pub fn wait_lines(event: &WorkflowEvent, signal_command: &[String]) -> Vec<String> {
    let text = |key: &str| event.data.get(key).and_then(Value::as_str);
    match event.event_type {
        EventType::WaitStarted => {
            let names = names(event);
            let run_id = text("signalRunId").unwrap_or(&event.metadata.run_id);
            let mut line = format!("[wait] {run_id} waits for {}", quoted(&names));
            if let Some(description) = text("description") {
                line.push_str(&format!(": {}", one_line(description, 200)));
            }
            match text("deadline") {
                Some(deadline) => line.push_str(&format!(" (until {deadline})")),
                None => line.push_str(" (no deadline)"),
            }
            let mut command = signal_command.to_vec();
            command.extend([
                run_id.to_owned(),
                names.first().copied().unwrap_or("NAME").to_owned(),
            ]);
            let mut answer = format!("{} --data '<JSON>'", shell_line(&command));
            if names.len() > 1 {
                answer.push_str(&format!(" (or name {})", names[1..].join(", ")));
            }
            vec![line, format!("[wait] answer with: {answer}")]
        }
        EventType::WaitCompleted => match text("outcome") {
            Some("received") => vec![format!(
                "[wait] {:?} received",
                text("name").unwrap_or_default()
            )],
            Some("timedOut") => vec![format!(
                "[wait] {} timed out at {}",
                quoted(&names(event)),
                text("deadline").unwrap_or_default()
            )],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The names a wait event names.
fn names(event: &WorkflowEvent) -> Vec<&str> {
    event
        .data
        .get("names")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `"a" or "b"`.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `text` on one line (line breaks as spaces), cut to `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
