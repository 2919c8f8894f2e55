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
    pub run_id: String,
    pub prompt: String,
}

/// Reads the call log (`step_id <TAB> attempt <TAB> pid <TAB> run_id <TAB> prompt as JSON` per
/// line).
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
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let parsed = match fields.as_slice() {
                [step_id, _, pid, run_id, prompt] if !step_id.is_empty() => pid
                    .parse()
                    .ok()
                    .zip(serde_json::from_str::<String>(prompt).ok())
                    .map(|(pid, prompt)| LoggedCall {
                        step_id: (*step_id).to_owned(),
                        pid,
                        run_id: (*run_id).to_owned(),
                        prompt,
                    }),
                _ => None,
            };
            parsed.ok_or_else(|| anyhow::anyhow!("malformed call log line {line:?}"))
        })
        .collect()
}

/// Which step a call served: its run and the prompt of the step's first call. A call whose
/// claim was deferred and that was interrupted left no row, and its repeat runs under a new
/// step id; the step's prompt (unique within a torture run) names it across both.
type StepKey = (String, String);

/// The step each call served, by step id: the prompt of the first logged call with that id
/// (later calls of one step id are its tries and schema corrections).
fn step_keys(calls: &[LoggedCall]) -> BTreeMap<&str, StepKey> {
    let mut keys = BTreeMap::new();
    for call in calls {
        keys.entry(call.step_id.as_str())
            .or_insert_with(|| (call.run_id.clone(), call.prompt.clone()));
    }
    keys
}

/// A step row's key: its run and its prompt.
fn row_key(step: &StepRecord) -> StepKey {
    (
        step.run_id.clone(),
        step.input["prompt"].as_str().unwrap_or_default().to_owned(),
    )
}

/// What one torture run has seen so far.
#[derive(Debug, Default)]
pub(crate) struct RunWatch {
    /// Completed steps as first seen completed: (state, result, attempts, updated_at).
    completed: BTreeMap<String, StepRecord>,
    /// Interruptions that hit each step while its call was in flight.
    hits: BTreeMap<StepKey, u32>,
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
        let completed: BTreeSet<StepKey> = steps
            .iter()
            .filter(|step| step.kind == StepKind::Agent && step.state == State::Completed)
            .map(row_key)
            .collect();
        let keys = step_keys(calls);
        let called_by_victim: BTreeSet<&StepKey> = calls
            .iter()
            .filter(|call| call.pid == pid)
            .filter_map(|call| keys.get(call.step_id.as_str()))
            .collect();
        // A step the victim called and that is not completed — claimed, or with no row at all
        // (its claim deferred) — was hit.
        for key in called_by_victim {
            if !completed.contains(key) {
                *self.hits.entry(key.clone()).or_default() += 1;
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

        let task_runs: BTreeSet<&str> = steps.iter().map(|step| step.run_id.as_str()).collect();
        let keys = step_keys(calls);
        let mut per_step: BTreeMap<&StepKey, u64> = BTreeMap::new();
        for call in calls
            .iter()
            .filter(|call| task_runs.contains(call.run_id.as_str()))
        {
            if let Some(key) = keys.get(call.step_id.as_str()) {
                *per_step.entry(key).or_default() += 1;
            }
        }
        let agent_keys: BTreeMap<StepKey, &str> = steps
            .iter()
            .filter(|step| step.kind == StepKind::Agent && step.state == State::Completed)
            .map(|step| (row_key(step), step.step_id.as_str()))
            .collect();
        let mut total = 0;
        let mut repeated = 0;
        for (key, count) in &per_step {
            total += count;
            repeated += count.saturating_sub(1);
            let bound = 1 + u64::from(self.hits.get(*key).copied().unwrap_or(0));
            if *count > bound {
                violations.push(format!(
                    "the step of {key:?} was called {count} times; interruptions allow at most {bound}"
                ));
            }
            if !agent_keys.contains_key(*key) {
                violations.push(format!(
                    "{key:?} was called but no agent step of it completed"
                ));
            }
        }
        for (key, step_id) in &agent_keys {
            if !per_step.contains_key(key) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(step_id: &str, pid: u32, prompt: &str) -> LoggedCall {
        LoggedCall {
            step_id: step_id.into(),
            pid,
            run_id: "run_1".into(),
            prompt: prompt.into(),
        }
    }

    #[test]
    fn a_repeat_under_a_new_step_id_counts_for_the_same_step() {
        let calls = [
            // Killed in flight before its deferred claim was written: no row, this id is gone.
            call("step_lost", 1, "hello"),
            call("step_kept", 2, "hello"),
            // A schema correction: another prompt, the same step.
            call("step_kept", 2, "hello, but as JSON"),
            call("step_other", 2, "bye"),
        ];
        let keys = step_keys(&calls);
        let hello = ("run_1".to_owned(), "hello".to_owned());
        assert_eq!(keys["step_lost"], hello);
        assert_eq!(keys["step_kept"], hello);
        assert_eq!(keys["step_other"].1, "bye");
    }
}
