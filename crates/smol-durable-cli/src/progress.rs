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
                let tokens = event
                    .data
                    .get("usage")
                    .and_then(|usage| usage.get("outputTokens"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
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
}
