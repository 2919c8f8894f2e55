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
    /// A completed step was replayed from the store.
    #[serde(rename = "workflow.step_replayed")]
    StepReplayed,
    /// A run finished with a result.
    #[serde(rename = "workflow.result")]
    Result,
    /// A run failed or was cancelled.
    #[serde(rename = "workflow.error")]
    Error,
}

impl EventType {
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
            Self::StepReplayed => "workflow.step_replayed",
            Self::Result => "workflow.result",
            Self::Error => "workflow.error",
        }
    }
}

/// Who an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Run.
    pub run_id: String,
    /// Attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
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
    /// The parent's step for a child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
}

/// One event as sinks receive it and `events` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowEvent {
    /// Kind.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Nanoseconds since the attempt started (absent on the root `workflow.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_nanos: Option<u64>,
    /// Who it is about.
    pub metadata: EventMetadata,
    /// Type-specific fields (`phase`, `message`, `prompt`, `output`, `usage`, `result`, …).
    #[serde(flatten)]
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
