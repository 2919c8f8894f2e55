//! `history`: runs newest first, one run in detail, and `history delete`.

use anyhow::bail;
use serde_json::{json, Value};
use smol_durable::store::{RunFilter, RunRecord, State};
use smol_durable::Engine;

use crate::cli::{Format, HistoryAction, HistoryArgs};
use crate::inspect::{run_json, workflow_name};
use crate::output::pretty;
use crate::output::{errln, outln};
use crate::Outcome;

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
                errln!("error: run {} was not deleted: {error}", run.run_id);
                refused += 1;
                continue;
            }
        }
        outln!("{}", run.run_id);
        done += 1;
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    errln!("{verb} {done} run(s)");
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
            Format::Json => outln!("{}", pretty(&detail)),
            Format::Table => {
                print_table(std::slice::from_ref(&status.run));
                outln!();
                outln!("{:<4} {:<10} {:<10} CHECKPOINT", "#", "KIND", "STATE");
                for (index, step) in steps.iter().enumerate() {
                    outln!(
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
            outln!("{}", pretty(&Value::Array(runs)));
        }
        Format::Table => print_table(&runs),
    }
    Ok(Outcome::Success)
}

fn print_table(runs: &[RunRecord]) {
    outln!(
        "{:<31} {:<10} {:<24} {:>8} CREATED",
        "RUN",
        "STATE",
        "NAME",
        "TOKENS"
    );
    for run in runs {
        outln!(
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
