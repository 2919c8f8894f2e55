//! The invariants, checked from the database and the provider call log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use smol_durable_core::store::{RunFilter, State, StepKind, StepRecord};
use smol_durable_core::DurableStore;

/// One provider call from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedCall {
    pub step_id: String,
    pub pid: u32,
}

/// Reads the call log (`step_id <TAB> attempt <TAB> pid` per line).
pub(crate) fn read_log(path: &Path) -> anyhow::Result<Vec<LoggedCall>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error.into()),
    };
    // Each line is one O_APPEND write, whole or absent: a malformed one means the log cannot
    // be trusted to count calls.
    text.lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let step_id = fields.next().filter(|id| !id.is_empty());
            let pid = fields.nth(1).and_then(|pid| pid.parse().ok());
            match (step_id, pid) {
                (Some(step_id), Some(pid)) => Ok(LoggedCall {
                    step_id: step_id.to_owned(),
                    pid,
                }),
                _ => Err(anyhow::anyhow!("malformed call log line {line:?}")),
            }
        })
        .collect()
}

/// What one torture run has seen so far.
#[derive(Debug, Default)]
pub(crate) struct RunWatch {
    /// Completed steps as first seen completed: (state, result, attempts, updated_at).
    completed: BTreeMap<String, StepRecord>,
    /// Interruptions that hit each step while its call was in flight.
    hits: BTreeMap<String, u32>,
}

/// Every step of every run of a task (the root and its children).
async fn all_steps(store: &dyn DurableStore, task_id: &str) -> anyhow::Result<Vec<StepRecord>> {
    let filter = RunFilter {
        task_id: Some(task_id.to_owned()),
        ..RunFilter::default()
    };
    let mut steps = Vec::new();
    for run in store.list_runs(&filter).await? {
        steps.extend(store.load_steps(&run.run_id).await?);
    }
    Ok(steps)
}

fn same_completion(a: &StepRecord, b: &StepRecord) -> bool {
    a.state == b.state
        && a.result == b.result
        && a.fence == b.fence
        && a.updated_at == b.updated_at
        && a.input_signature_json == b.input_signature_json
}

impl RunWatch {
    /// Records what the database holds after the process `pid` ended (killed or failed): a step
    /// that process had called without completing it was hit. Returns violations.
    pub(crate) async fn after_interruption(
        &mut self,
        store: &dyn DurableStore,
        task_id: &str,
        calls: &[LoggedCall],
        pid: u32,
    ) -> anyhow::Result<Vec<String>> {
        let steps = all_steps(store, task_id).await?;
        for step in &steps {
            let called_by_victim = calls
                .iter()
                .any(|call| call.pid == pid && call.step_id == step.step_id);
            if called_by_victim && step.state != State::Completed {
                *self.hits.entry(step.step_id.clone()).or_default() += 1;
            }
        }
        Ok(self.check_completed_unchanged(&steps))
    }

    fn check_completed_unchanged(&mut self, steps: &[StepRecord]) -> Vec<String> {
        let mut violations = Vec::new();
        let now: BTreeMap<&str, &StepRecord> = steps
            .iter()
            .map(|step| (step.step_id.as_str(), step))
            .collect();
        for (step_id, first) in &self.completed {
            match now.get(step_id.as_str()) {
                Some(current) if same_completion(first, current) => {}
                Some(current) => violations.push(format!(
                    "completed step {step_id} changed: was {:?} / {:?} (attempts {}), now {:?} / {:?} (attempts {})",
                    first.state, first.result, first.fence, current.state, current.result, current.fence
                )),
                None => violations.push(format!("completed step {step_id} disappeared")),
            }
        }
        for step in steps {
            if step.state == State::Completed && !self.completed.contains_key(&step.step_id) {
                self.completed.insert(step.step_id.clone(), step.clone());
            }
        }
        violations
    }

    /// The checks once the run has completed. Returns (provider calls, re-executed calls,
    /// violations).
    pub(crate) async fn finish(
        &mut self,
        store: &dyn DurableStore,
        task_id: &str,
        root_run_id: &str,
        expected: &Value,
        calls: &[LoggedCall],
    ) -> anyhow::Result<(u64, u64, Vec<String>)> {
        let steps = all_steps(store, task_id).await?;
        let mut violations = self.check_completed_unchanged(&steps);

        let filter = RunFilter {
            task_id: Some(task_id.to_owned()),
            ..RunFilter::default()
        };
        for run in store.list_runs(&filter).await? {
            if run.state != State::Completed {
                violations.push(format!("run {} ended {}", run.run_id, run.state));
            }
            if run.run_id == root_run_id && run.completed_payload.as_ref() != Some(expected) {
                violations.push(format!(
                    "run {} result {:?} differs from an uninterrupted run's {expected}",
                    run.run_id, run.completed_payload
                ));
            }
        }
        match store.get_task(task_id).await? {
            Some(task) if task.state == State::Completed && task.lease_expires_at.is_none() => {}
            Some(task) => violations.push(format!(
                "task {task_id} is {} with lease {:?}",
                task.state, task.lease_expires_at
            )),
            None => violations.push(format!("task {task_id} is missing")),
        }
        for attempt in store.list_attempts(task_id).await? {
            if attempt.state == State::Running {
                violations.push(format!("attempt {} is still running", attempt.attempt_id));
            }
        }
        for step in &steps {
            if step.state != State::Completed {
                violations.push(format!("step {} ended {}", step.step_id, step.state));
            }
        }

        let ledger = store.ledger_entries(root_run_id).await?;
        let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
        for entry in ledger
            .iter()
            .filter(|entry| entry.source_type == smol_durable_core::store::LedgerSource::AgentStep)
        {
            *rows.entry(entry.source_id.as_str()).or_default() += 1;
        }
        let agent_steps: BTreeSet<&str> = steps
            .iter()
            .filter(|step| step.kind == StepKind::Agent && step.state == State::Completed)
            .map(|step| step.step_id.as_str())
            .collect();
        for step_id in &agent_steps {
            let count = rows.get(step_id).copied().unwrap_or(0);
            if count != 1 {
                violations.push(format!("agent step {step_id} has {count} ledger rows"));
            }
        }
        for step_id in rows.keys().filter(|id| !agent_steps.contains(*id)) {
            violations.push(format!(
                "ledger row for {step_id}, which is no completed agent step"
            ));
        }

        let run_steps: BTreeSet<&str> = steps.iter().map(|step| step.step_id.as_str()).collect();
        let mut per_step: BTreeMap<&str, u64> = BTreeMap::new();
        for call in calls
            .iter()
            .filter(|call| run_steps.contains(call.step_id.as_str()))
        {
            *per_step.entry(call.step_id.as_str()).or_default() += 1;
        }
        let mut total = 0;
        let mut repeated = 0;
        for (step_id, count) in &per_step {
            total += count;
            repeated += count.saturating_sub(1);
            let bound = 1 + u64::from(self.hits.get(*step_id).copied().unwrap_or(0));
            if *count > bound {
                violations.push(format!(
                    "step {step_id} was called {count} times; interruptions allow at most {bound}"
                ));
            }
        }
        for step_id in &agent_steps {
            if !per_step.contains_key(step_id) {
                violations.push(format!(
                    "agent step {step_id} completed without a logged call"
                ));
            }
        }
        Ok((total, repeated, violations))
    }
}

/// The mailbox of a `waits.mjs` run once it completed: exactly `count` signals, one per
/// idempotency key (a restarted signaller stored no second copy), each consumed exactly once by
/// a completed `wait` step whose result names it, no step consuming two, and none left pending
/// or rejected (a lost signal would have left the run waiting).
pub(crate) async fn check_signals(
    store: &dyn DurableStore,
    run_id: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    use smol_durable_core::store::SignalState;
    let mut violations = Vec::new();
    let signals = store.list_signals(run_id).await?;
    let keys: BTreeSet<Option<&String>> =
        signals.iter().map(|s| s.idempotency_key.as_ref()).collect();
    if signals.len() as u64 != count || keys.len() != signals.len() {
        violations.push(format!(
            "run {run_id}: {} signals stored with {} distinct keys, expected {count}",
            signals.len(),
            keys.len()
        ));
    }
    let steps = store.load_steps(run_id).await?;
    let mut consumers = BTreeSet::new();
    for signal in &signals {
        if signal.state != SignalState::Consumed {
            violations.push(format!(
                "run {run_id}: signal {} is {} after the run completed",
                signal.signal_id, signal.state
            ));
            continue;
        }
        let Some(step_id) = &signal.step_id else {
            violations.push(format!(
                "signal {} is consumed by no step",
                signal.signal_id
            ));
            continue;
        };
        if !consumers.insert(step_id.clone()) {
            violations.push(format!("step {step_id} consumed two signals"));
        }
        let named = steps
            .iter()
            .find(|step| &step.step_id == step_id)
            .is_some_and(|step| {
                step.kind == StepKind::Wait
                    && step.state == State::Completed
                    && step
                        .result
                        .as_ref()
                        .and_then(|result| result.get("signalId"))
                        .and_then(Value::as_str)
                        == Some(signal.signal_id.as_str())
            });
        if !named {
            violations.push(format!(
                "signal {} is consumed by step {step_id}, whose result does not name it",
                signal.signal_id
            ));
        }
    }
    Ok(violations)
}
