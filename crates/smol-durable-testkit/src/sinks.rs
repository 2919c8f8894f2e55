//! Sinks that record what they receive, for assertions.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use smol_durable_core::{AgentResponse, BoxError, EventSink, SessionLogSink, WorkflowEvent};
use tokio::sync::Notify;

/// Records every event.
#[derive(Debug, Default)]
pub struct RecordingEventSink {
    events: Mutex<Vec<WorkflowEvent>>,
}

impl RecordingEventSink {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events received so far, in order.
    pub fn events(&self) -> Vec<WorkflowEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl EventSink for RecordingEventSink {
    async fn emit(&self, event: &WorkflowEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// One saved session.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSession {
    /// Provider name.
    pub provider: String,
    /// Run.
    pub run_id: String,
    /// Step.
    pub step_id: String,
    /// The full response, `raw` included.
    pub response: AgentResponse,
}

type SaveHook = Box<dyn Fn(&SavedSession) + Send + Sync>;

/// Records every saved session and signals each save.
#[derive(Default)]
pub struct RecordingSessionSink {
    saved: Mutex<Vec<SavedSession>>,
    notify: Arc<Notify>,
    on_save: Mutex<Option<SaveHook>>,
}

impl std::fmt::Debug for RecordingSessionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSessionSink")
            .field("saved", &self.saved.lock().map(|s| s.len()).unwrap_or(0))
            .finish()
    }
}

impl RecordingSessionSink {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `hook` inside every save (e.g. to inspect the store at that moment).
    pub fn on_save(self, hook: impl Fn(&SavedSession) + Send + Sync + 'static) -> Self {
        if let Ok(mut slot) = self.on_save.lock() {
            *slot = Some(Box::new(hook));
        }
        self
    }

    /// Sessions saved so far.
    pub fn saved(&self) -> Vec<SavedSession> {
        self.saved.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for the next save.
    pub async fn saved_notification(&self) {
        self.notify.notified().await;
    }
}

#[async_trait]
impl SessionLogSink for RecordingSessionSink {
    async fn save(
        &self,
        provider: &str,
        run_id: &str,
        step_id: &str,
        response: &AgentResponse,
    ) -> Result<(), BoxError> {
        let saved = SavedSession {
            provider: provider.to_owned(),
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
            response: response.clone(),
        };
        if let Ok(hook) = self.on_save.lock() {
            if let Some(hook) = hook.as_ref() {
                hook(&saved);
            }
        }
        if let Ok(mut all) = self.saved.lock() {
            all.push(saved);
        }
        self.notify.notify_waiters();
        Ok(())
    }
}
