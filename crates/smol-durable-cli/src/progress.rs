//! What a person watching a run on a terminal sees on stderr besides the `[phase]` and
//! `[log]` lines: agent calls (numbered, so parallel ones can be told apart) with what each
//! is doing and for how long, retries, sleeps, replayed steps, and tokens spent against the
//! budget.

use std::collections::HashMap;

use serde_json::Value;
use smol_durable_core::{EventType, WorkflowEvent};

/// Turns events into lines; remembers each running agent call and what was spent.
#[derive(Debug, Default)]
pub struct Progress {
    /// Per running call (by step): when it started and its number.
    running: HashMap<String, (u64, usize)>,
    calls: usize,
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
        let now = event.elapsed_nanos.unwrap_or_default();
        let seconds = |start: u64| now.saturating_sub(start) as f64 / 1e9;
        let line = match event.event_type {
            EventType::AgentStarted => {
                self.calls += 1;
                self.running.insert(step, (now, self.calls));
                format!(
                    "  … agent #{}: {}",
                    self.calls,
                    short(text("promptPreview"))
                )
            }
            EventType::AgentEvent => {
                let action = text("action");
                let (start, number) = self.running.get(&step).copied()?;
                if action.is_empty() {
                    return None;
                }
                format!(
                    "  ↳ agent #{number} {:.1}s: {}",
                    seconds(start),
                    short(action)
                )
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
                let (start, number) = self.running.remove(&step).unwrap_or((now, 0));
                let spent = match self.budget {
                    Some(total) => format!("{} of {total} tokens", self.spent),
                    None => format!("{} tokens", self.spent),
                };
                format!(
                    "  ✓ agent #{number} done in {:.1}s ({spent})",
                    seconds(start)
                )
            }
            EventType::AgentFailed => {
                let (_, number) = self.running.remove(&step).unwrap_or((now, 0));
                format!("  ✗ agent #{number} failed: {}", short(text("message")))
            }
            EventType::AgentRetrying => {
                let number = |key: &str| event.data.get(key).and_then(Value::as_u64).unwrap_or(0);
                let call = self.running.get(&step).map_or(0, |(_, number)| *number);
                format!(
                    "  ⟳ agent #{call} try {} of {} failed ({}); trying again in {:.1}s",
                    number("try"),
                    number("maxTries"),
                    short(text("message")),
                    number("waitMs") as f64 / 1000.0
                )
            }
            EventType::SleepStarted => format!("  ⏾ sleeping until {}", text("wakeAt")),
            EventType::StepReplayed => {
                let what = match text("promptPreview") {
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
    fn agent_calls_show_their_actions_duration_and_budget() {
        let mut progress = Progress::new(Some(100));
        let started = progress.line(&event(
            EventType::AgentStarted,
            1_000_000_000,
            json!({ "promptPreview": "write a poem\nabout tea" }),
        ));
        assert_eq!(started.as_deref(), Some("  … agent #1: write a poem…"));
        let acting = progress.line(&event(
            EventType::AgentEvent,
            2_250_000_000,
            json!({ "providerEvent": {}, "action": "Bash: cargo test" }),
        ));
        assert_eq!(
            acting.as_deref(),
            Some("  ↳ agent #1 1.2s: Bash: cargo test")
        );
        let quiet = event(
            EventType::AgentEvent,
            2_300_000_000,
            json!({ "providerEvent": {} }),
        );
        assert_eq!(progress.line(&quiet), None);
        let done = progress.line(&event(
            EventType::AgentCompleted,
            3_500_000_000,
            json!({ "usage": { "outputTokens": 12 } }),
        ));
        assert_eq!(
            done.as_deref(),
            Some("  ✓ agent #1 done in 2.5s (12 of 100 tokens)")
        );
        let replayed = progress.line(&event(
            EventType::StepReplayed,
            0,
            json!({ "kind": "agent", "promptPreview": "hi" }),
        ));
        assert_eq!(replayed.as_deref(), Some("  ↺ replayed agent: hi"));
        // `[phase]` and `[log]` lines say those already.
        assert_eq!(
            progress.line(&event(EventType::Phase, 0, json!({ "name": "draft" }))),
            None
        );
        assert_eq!(progress.line(&event(EventType::Result, 0, json!({}))), None);
    }

    #[test]
    fn a_failed_agent_says_why() {
        let mut progress = Progress::new(None);
        progress.line(&event(
            EventType::AgentStarted,
            0,
            json!({ "promptPreview": "x" }),
        ));
        let failed = progress.line(&event(
            EventType::AgentFailed,
            0,
            json!({ "message": "Codex provider exited with code 1: boom" }),
        ));
        assert_eq!(
            failed.as_deref(),
            Some("  ✗ agent #1 failed: Codex provider exited with code 1: boom")
        );
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
            Some("  ⟳ agent #0 try 1 of 3 failed (503 overloaded); trying again in 1.5s")
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
