//! `replay`: a run's script evaluated offline against the run's recorded steps.

use smol_durable_core::{Engine, RecordedStep, ReplayOptions, ReplayVerdict};

use crate::cli::{Format, ReplayArgs};
use crate::output::{outln, pretty};
use crate::run::read_workflow;
use crate::Outcome;

/// `replay RUN [--script FILE]`: exit 0 when the script replays the run exactly, else 1.
pub async fn replay(engine: &Engine, options: &ReplayArgs) -> anyhow::Result<Outcome> {
    let mut replay = ReplayOptions::new();
    if let Some(script) = &options.script {
        replay = replay.source(read_workflow(script)?);
    }
    let report = engine.replay(&options.run_id, replay).await?;
    if options.output == Some(Format::Json) {
        outln!("{}", pretty(&serde_json::to_value(&report)?));
    } else {
        outln!("{:<11}{}", "Run:", report.run_id);
        outln!(
            "{:<11}{} call{} answered from the recording (no agent called, nothing written)",
            "Replayed:",
            report.replayed,
            if report.replayed == 1 { "" } else { "s" }
        );
        if let Some(error) = &report.error {
            outln!("{:<11}the script failed: {error}", "Ended:");
        }
        if let Some(step) = &report.stopped_at {
            outln!(
                "{:<11}at {}: the run had got no further (it recorded the step as {})",
                "Stopped:",
                step_text(step),
                step.state
            );
        }
        if let Some(call) = &report.beyond_recording {
            let site = call
                .site
                .as_ref()
                .map_or_else(String::new, |site| format!(" at {site}"));
            outln!(
                "{:<11}at the {} call{site}: every step the unfinished run recorded replayed, \
                 and it had got no further",
                "Stopped:",
                call.kind
            );
        }
        match &report.verdict {
            ReplayVerdict::Identical => {
                outln!("{:<11}identical: the script replays the run", "Verdict:")
            }
            ReplayVerdict::Diverged(divergence) => {
                outln!(
                    "{:<11}diverged: {}",
                    "Verdict:",
                    divergence.describe().trim_end()
                )
            }
            ReplayVerdict::NonDeterministic {
                index,
                first,
                second,
            } => outln!(
                "{:<11}non-deterministic: two replays of the same run made different calls; \
                 call {} was {} the first time and {} the second (the script depends on \
                 something besides its arguments and its steps' results)",
                "Verdict:",
                index + 1,
                first.as_deref().unwrap_or("no call"),
                second.as_deref().unwrap_or("no call"),
            ),
            _ => outln!("{:<11}{:?}", "Verdict:", report.verdict),
        }
        if !report.unreached.is_empty() {
            outln!(
                "{:<11}{} completed step{} the script did not reach:",
                "Unreached:",
                report.unreached.len(),
                if report.unreached.len() == 1 { "" } else { "s" }
            );
            for step in &report.unreached {
                outln!("  {}", step_text(step));
            }
        }
    }
    Ok(if report.is_identical() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// `step 3 (agent "review the plan…")`, else its name: what a person recognises.
fn step_text(step: &RecordedStep) -> String {
    let what = match step
        .signature
        .get("prompt")
        .and_then(|prompt| prompt.as_str())
    {
        Some(prompt) => {
            let line = prompt.lines().next().unwrap_or_default();
            let mut preview: String = line.chars().take(60).collect();
            if preview.len() < prompt.len() {
                preview.push('…');
            }
            format!("{preview:?}")
        }
        None => step.checkpoint_name.clone(),
    };
    format!("step {} ({} {what})", step.number, step.kind)
}
