//! The attempt's event writer: appends events to the store in the order they were emitted,
//! then fans them out to the sinks and the run handle.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::shared::EngineShared;
use crate::events::WorkflowEvent;
use crate::store::EventRow;

/// What the writer receives.
pub(crate) enum WriterMessage {
    Event(Box<(EventRow, WorkflowEvent)>),
    /// Flush, then stop: the attempt is over even if stray copies of its context live on.
    Close(oneshot::Sender<()>),
}

pub(crate) async fn write_events(
    engine: Arc<EngineShared>,
    mut inbox: mpsc::UnboundedReceiver<WriterMessage>,
    handle: Option<mpsc::UnboundedSender<WorkflowEvent>>,
) {
    let mut batch = Vec::new();
    let mut closing = false;
    while let Some(first) = inbox.recv().await {
        let mut flushes = Vec::new();
        let mut pending = vec![first];
        while let Ok(next) = inbox.try_recv() {
            pending.push(next);
        }
        for message in pending {
            match message {
                WriterMessage::Event(event) => batch.push(*event),
                WriterMessage::Close(done) => {
                    flushes.push(done);
                    closing = true;
                }
            }
        }
        if !batch.is_empty() {
            let (records, events): (Vec<EventRow>, Vec<WorkflowEvent>) = batch.drain(..).unzip();
            if let Err(error) = engine.store.append_events(&records).await {
                tracing::warn!(%error, "could not store workflow events");
            }
            for event in events {
                for sink in &engine.event_sinks {
                    sink.emit(&event).await;
                }
                if let Some(handle) = &handle {
                    let _ = handle.send(event);
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closing {
            return;
        }
    }
}
