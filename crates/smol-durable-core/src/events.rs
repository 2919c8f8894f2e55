//! Workflow events (SPEC §8) and the sinks that receive them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AgentResponse, BoxError};

/// The kinds of event, spelled as they appear in JSON (`"type"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventType {
    /// A run (root or child) started.
    #[serde(rename = "workflow.started")]
    Started,
    /// `phase(name)`.
    #[serde(rename = "workflow.phase")]
    Phase,
    /// `log(...)`.
    #[serde(rename = "workflow.log")]
    Log,
    /// An agent call is about to run.
    #[serde(rename = "workflow.agent_started")]
    AgentStarted,
    /// Progress reported by a provider.
    #[serde(rename = "workflow.agent_event")]
    AgentEvent,
    /// An agent call completed.
    #[serde(rename = "workflow.agent_completed")]
    AgentCompleted,
    /// An agent call failed.
    #[serde(rename = "workflow.agent_failed")]
    AgentFailed,
    /// A try of an agent call failed and the call tries again after `waitMs` (smol-durable's
    /// addition).
    #[serde(rename = "workflow.agent_retrying")]
    AgentRetrying,
    /// A sleep started waiting until `wakeAt` (smol-durable's addition).
    #[serde(rename = "workflow.sleep_started")]
    SleepStarted,
    /// A wait started waiting for a signal (smol-durable's addition).
    #[serde(rename = "workflow.wait_started")]
    WaitStarted,
    /// A wait ended: `outcome` is `received`, `timedOut` or `cancelled` (smol-durable's
    /// addition).
    #[serde(rename = "workflow.wait_completed")]
    WaitCompleted,
    /// A signal was stored in the run's mailbox (smol-durable's addition).
    #[serde(rename = "workflow.signal_received")]
    SignalReceived,
    /// A completed step was replayed from the store.
    #[serde(rename = "workflow.step_replayed")]
    StepReplayed,
    /// A run completed while completed steps of earlier attempts (or of the run it was forked
    /// from) were never reached again: `count`, and the first such step (smol-durable's
    /// addition).
    #[serde(rename = "workflow.steps_unreached")]
    StepsUnreached,
    /// A run finished with a result.
    #[serde(rename = "workflow.result")]
    Result,
    /// A run failed or was cancelled.
    #[serde(rename = "workflow.error")]
    Error,
}

impl EventType {
    /// Every kind of event.
    pub const ALL: [EventType; 16] = [
        Self::Started,
        Self::Phase,
        Self::Log,
        Self::AgentStarted,
        Self::AgentEvent,
        Self::AgentCompleted,
        Self::AgentFailed,
        Self::AgentRetrying,
        Self::SleepStarted,
        Self::WaitStarted,
        Self::WaitCompleted,
        Self::SignalReceived,
        Self::StepReplayed,
        Self::StepsUnreached,
        Self::Result,
        Self::Error,
    ];

    /// The event type spelled `text` (`workflow.agent_started`), if this version knows it.
    pub fn parse(text: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The JSON spelling, e.g. `workflow.agent_started`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Started => "workflow.started",
            Self::Phase => "workflow.phase",
            Self::Log => "workflow.log",
            Self::AgentStarted => "workflow.agent_started",
            Self::AgentEvent => "workflow.agent_event",
            Self::AgentCompleted => "workflow.agent_completed",
            Self::AgentFailed => "workflow.agent_failed",
            Self::AgentRetrying => "workflow.agent_retrying",
            Self::SleepStarted => "workflow.sleep_started",
            Self::WaitStarted => "workflow.wait_started",
            Self::WaitCompleted => "workflow.wait_completed",
            Self::SignalReceived => "workflow.signal_received",
            Self::StepReplayed => "workflow.step_replayed",
            Self::StepsUnreached => "workflow.steps_unreached",
            Self::Result => "workflow.result",
            Self::Error => "workflow.error",
        }
    }
}

/// Who an event is about (smol-wf's metadata; `workflowRunId` and `attemptId` are
/// smol-durable's additions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The root run, on every event of its tree.
    pub run_id: String,
    /// Step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// Provider name of an agent step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// 0 for the root run, 1 for its children, …
    pub workflow_depth: u32,
    /// The parent's step, on every event of a child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
    /// The child run an event is about (absent on the root run's events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_run_id: Option<String>,
    /// Attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

impl EventMetadata {
    /// The run the event is about: the child run for a child's event, else the root run.
    pub fn subject_run_id(&self) -> &str {
        self.workflow_run_id.as_deref().unwrap_or(&self.run_id)
    }
}

/// One event as sinks receive it, `run --events` and `events` print it: smol-wf's JSON-lines
/// shape `{"type", "elapsedNanos", "metadata", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowEvent {
    /// Kind.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Nanoseconds since the attempt's event stream started, never decreasing (absent on the
    /// root `workflow.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_nanos: Option<u64>,
    /// Who it is about.
    pub metadata: EventMetadata,
    /// Type-specific fields, as smol-wf names them: `startTime` (started), `name`/`options`
    /// (phase), `message` (log, agent_failed, error), `phase`/`promptPreview` (agent_started),
    /// `model`/`sessionId`/`usage` (agent_completed), `results`/`tokenUsage` (result),
    /// `kind`/`checkpoint` (step_replayed).
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl WorkflowEvent {
    /// An event with no data yet.
    pub fn new(event_type: EventType, metadata: EventMetadata) -> Self {
        Self {
            event_type,
            elapsed_nanos: None,
            metadata,
            data: Map::new(),
        }
    }

    /// Adds a data field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The event as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The first 200 characters of a prompt, then `…` when there were more (smol-wf's
/// `promptPreview`).
pub fn prompt_preview(prompt: &str) -> String {
    const PREVIEW_CHARS: usize = 200;
    match prompt.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &prompt[..cut]),
        None => prompt.to_owned(),
    }
}

/// Bounds an event's data to about `max_bytes` of JSON: strings longer than a quarter of it are
/// cut (at a character boundary, with a `…[N bytes truncated]` marker), and if the data is still
/// too large it is replaced by a preview. A bounded event carries `"truncated": true` and
/// `"originalBytes"`. Returns whether anything was cut.
pub fn bound_event_data(data: &mut serde_json::Map<String, Value>, max_bytes: usize) -> bool {
    let size = |data: &serde_json::Map<String, Value>| crate::limits::json_len(data);
    let original = size(data);
    if original <= max_bytes {
        return false;
    }
    let longest = (max_bytes / 4).max(16);
    for value in data.values_mut() {
        cut_long_strings(value, longest, 0);
    }
    if size(data) > max_bytes {
        let text = serde_json::to_string(data).unwrap_or_default();
        let mut preview = text;
        cut_string(&mut preview, longest);
        data.clear();
        data.insert("preview".to_owned(), Value::String(preview));
    }
    data.insert("truncated".to_owned(), Value::Bool(true));
    data.insert("originalBytes".to_owned(), Value::from(original));
    true
}

fn cut_long_strings(value: &mut Value, longest: usize, depth: usize) {
    // Values reaching events come from the script bridge, which limits depth to 100.
    if depth > 128 {
        return;
    }
    match value {
        Value::String(text) => cut_string(text, longest),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| cut_long_strings(item, longest, depth + 1)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| cut_long_strings(item, longest, depth + 1)),
        _ => {}
    }
}

fn cut_string(text: &mut String, longest: usize) {
    if text.len() <= longest {
        return;
    }
    let mut end = longest;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("…[{cut} bytes truncated]"));
}

/// Receives every event of every run, in order per run, after it was appended to the store.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Handles one event. Sinks should be quick; a slow sink delays later events.
    async fn emit(&self, event: &WorkflowEvent);
}

/// Receives each provider result in full (with `raw`) **before** its step is marked completed,
/// so transcripts are saved even if the run fails or is cancelled right after.
#[async_trait]
pub trait SessionLogSink: Send + Sync + std::fmt::Debug {
    /// Saves one result. An error is logged and reported as an event; the step still completes,
    /// because the call has been paid for.
    async fn save(
        &self,
        provider: &str,
        run_id: &str,
        step_id: &str,
        response: &AgentResponse,
    ) -> Result<(), BoxError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> serde_json::Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn prompt_previews_keep_200_characters() {
        assert_eq!(prompt_preview("short"), "short");
        let exact = "é".repeat(200);
        assert_eq!(prompt_preview(&exact), exact);
        let long = format!("{exact}xyz");
        assert_eq!(prompt_preview(&long), format!("{exact}…"));
    }

    #[test]
    fn events_have_smol_wf_s_envelope() {
        let metadata = EventMetadata {
            run_id: "run_1".into(),
            ..EventMetadata::default()
        };
        let event = WorkflowEvent::new(EventType::Log, metadata).with("message", "hi");
        assert_eq!(
            event.to_json(),
            json!({
                "type": "workflow.log",
                "metadata": { "runId": "run_1", "workflowDepth": 0 },
                "data": { "message": "hi" }
            })
        );
    }

    #[test]
    fn an_emitted_event_s_row_holds_the_event_as_sinks_print_it() {
        let metadata = EventMetadata {
            run_id: "run_1".into(),
            step_id: Some("step_1".into()),
            ..EventMetadata::default()
        };
        let mut event = WorkflowEvent::new(EventType::AgentStarted, metadata)
            .with("promptPreview", "héllo \u{0}\"");
        event.elapsed_nanos = Some(42);
        let row = crate::store::EventRow::emitted(&event, "run_2".into(), "run_1".into(), None, 7);
        assert!(row
            .payload
            .starts_with(r#"{"type":"workflow.agent_started","elapsedNanos":42,"#));
        // PostgreSQL's store finds U+0000 by this escape.
        assert!(row.payload.contains(r"\u0000"));
        let parsed: Value = serde_json::from_str(&row.payload).unwrap();
        assert_eq!(parsed, event.to_json());
        assert_eq!(row.event_type, "workflow.agent_started");
        assert_eq!(row.step_id.as_deref(), Some("step_1"));
        assert_eq!(
            (row.run_id.as_str(), row.root_run_id.as_str()),
            ("run_2", "run_1")
        );
        assert!(row.event_id.starts_with("evt_"));
    }

    #[test]
    fn small_event_data_is_left_alone() {
        let mut data = map(json!({"prompt": "hi", "n": 1}));
        let before = data.clone();
        assert!(!bound_event_data(&mut data, 1024));
        assert_eq!(data, before);
    }

    #[test]
    fn long_strings_are_cut_at_char_boundaries_with_a_marker() {
        let long = "é".repeat(10_000); // 20 000 bytes, two per char
        let mut data = map(json!({"prompt": long, "kind": "agent"}));
        assert!(bound_event_data(&mut data, 4_000));
        let prompt = data["prompt"].as_str().unwrap_or_default();
        assert!(prompt.starts_with("éé"));
        assert!(prompt.ends_with("bytes truncated]"), "{prompt}");
        assert_eq!(data["kind"], "agent");
        assert_eq!(data["truncated"], true);
        assert!(data["originalBytes"].as_u64() > Some(20_000));
        let size = serde_json::to_string(&data).map(|t| t.len()).unwrap_or(0);
        assert!(size <= 4_000, "{size}");
    }

    #[test]
    fn many_values_become_one_preview() {
        let items: Vec<Value> = (0..10_000).map(Value::from).collect();
        let mut data = map(json!({"result": items}));
        assert!(bound_event_data(&mut data, 2_000));
        assert!(data.get("result").is_none());
        assert!(data["preview"]
            .as_str()
            .is_some_and(|p| p.starts_with("{\"result\":[0,1,2")));
        let size = serde_json::to_string(&data).map(|t| t.len()).unwrap_or(0);
        assert!(size <= 2_000, "{size}");
    }

    #[test]
    fn every_event_type_reads_back_from_its_spelling() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::String(kind.as_str().to_owned()))
            );
        }
        assert_eq!(EventType::parse("workflow.from_the_future"), None);
    }
}
