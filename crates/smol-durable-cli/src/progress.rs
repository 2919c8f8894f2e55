//! What a person watching a run on a terminal sees on stderr: phases, log lines, agent calls
//! with their duration, replayed steps, and tokens spent against the budget.

use std::collections::HashMap;

use serde_json::Value;
use smol_durable_core::{EventType, WorkflowEvent};

/// Turns events into lines; remembers when each agent call started and what was spent.
#[derive(Debug, Default)]
pub struct Progress {
    started: HashMap<String, u64>,
    spent: u64,
    budget: Option<u64>,
}

impl Progress {
    /// A view of a run with this output-token budget, if it has one.
    pub fn new(budget: Option<u64>) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// The line for `event`, if it deserves one.
    pub fn line(&mut self, event: &WorkflowEvent) -> Option<String> {
        let text = |key: &str| event.data.get(key).and_then(Value::as_str).unwrap_or("");
        let step = event.metadata.step_id.clone().unwrap_or_default();
        let indent = "  ".repeat(event.metadata.workflow_depth as usize);
        let line = match event.event_type {
            EventType::Phase => format!("▸ {}", text("phase")),
            EventType::Log => format!("  {}", text("message")),
            EventType::AgentStarted => {
                self.started
                    .insert(step, event.elapsed_nanos.unwrap_or_default());
                format!("  … agent: {}", short(text("prompt")))
            }
            EventType::AgentCompleted => {
                let output_tokens = |usage: Option<&Value>| {
                    usage
                        .and_then(|usage| usage.get("outputTokens"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                // Failed tries that were paid for count against the budget too.
                let failed = event.data.get("failedTries");
                let tokens = output_tokens(event.data.get("usage"))
                    .saturating_add(output_tokens(failed.and_then(|tries| tries.get("usage"))));
                self.spent = self.spent.saturating_add(tokens);
                let took = self
                    .started
                    .remove(&step)
                    .zip(event.elapsed_nanos)
                    .map(|(start, end)| end.saturating_sub(start) as f64 / 1e9)
                    .unwrap_or(0.0);
                let spent = match self.budget {
                    Some(total) => format!("{} of {total} tokens", self.spent),
                    None => format!("{} tokens", self.spent),
                };
                format!("  ✓ agent done in {took:.1}s ({spent})")
            }
            EventType::AgentFailed => format!("  ✗ agent failed: {}", short(text("error"))),
            EventType::AgentRetrying => {
                let number = |key: &str| event.data.get(key).and_then(Value::as_u64).unwrap_or(0);
                format!(
                    "  ⟳ agent try {} of {} failed ({}); trying again in {:.1}s",
                    number("try"),
                    number("maxTries"),
                    short(text("message")),
                    number("waitMs") as f64 / 1000.0
                )
            }
            EventType::SleepStarted => format!("  ⏾ sleeping until {}", text("wakeAt")),
            EventType::StepReplayed => {
                let what = match text("prompt") {
                    "" => text("kind").to_owned(),
                    prompt => format!("{}: {}", text("kind"), short(prompt)),
                };
                format!("  ↺ replayed {what}")
            }
            _ => return None,
        };
        Some(format!("{indent}{line}"))
    }
}

/// The first line of `text`, at most 60 characters.
fn short(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(60).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use smol_durable_core::EventMetadata;

    fn event(event_type: EventType, elapsed: u64, data: Value) -> WorkflowEvent {
        let metadata = EventMetadata {
            step_id: Some("step_1".into()),
            ..EventMetadata::default()
        };
        let mut event = WorkflowEvent::new(event_type, metadata);
        event.elapsed_nanos = Some(elapsed);
        if let Value::Object(map) = data {
            event.data = map;
        }
        event
    }

    #[test]
    fn agent_calls_show_duration_and_budget() {
        let mut progress = Progress::new(Some(100));
        let started = progress.line(&event(
            EventType::AgentStarted,
            1_000_000_000,
            json!({ "prompt": "write a poem\nabout tea" }),
        ));
        assert_eq!(started.as_deref(), Some("  … agent: write a poem…"));
        let done = progress.line(&event(
            EventType::AgentCompleted,
            3_500_000_000,
            json!({ "usage": { "outputTokens": 12 } }),
        ));
        assert_eq!(
            done.as_deref(),
            Some("  ✓ agent done in 2.5s (12 of 100 tokens)")
        );
        let replayed = progress.line(&event(
            EventType::StepReplayed,
            0,
            json!({ "kind": "agent", "prompt": "hi" }),
        ));
        assert_eq!(replayed.as_deref(), Some("  ↺ replayed agent: hi"));
        assert_eq!(
            progress
                .line(&event(EventType::Phase, 0, json!({ "phase": "draft" })))
                .as_deref(),
            Some("▸ draft")
        );
        assert_eq!(progress.line(&event(EventType::Result, 0, json!({}))), None);
    }

    #[test]
    fn retries_sleeps_and_paid_failed_tries_are_shown() {
        let mut progress = Progress::new(None);
        let retrying = progress.line(&event(
            EventType::AgentRetrying,
            0,
            json!({ "try": 1, "maxTries": 3, "waitMs": 1500, "message": "503 overloaded" }),
        ));
        assert_eq!(
            retrying.as_deref(),
            Some("  ⟳ agent try 1 of 3 failed (503 overloaded); trying again in 1.5s")
        );
        let sleeping = progress.line(&event(
            EventType::SleepStarted,
            0,
            json!({ "wakeAt": "2026-12-03T16:00:00.000Z" }),
        ));
        assert_eq!(
            sleeping.as_deref(),
            Some("  ⏾ sleeping until 2026-12-03T16:00:00.000Z")
        );
        let done = progress.line(&event(
            EventType::AgentCompleted,
            0,
            json!({ "usage": { "outputTokens": 2 }, "failedTries": { "count": 1, "usage": { "outputTokens": 5 } } }),
        ));
        assert!(done.is_some_and(|line| line.ends_with("(7 tokens)")));
    }
}
