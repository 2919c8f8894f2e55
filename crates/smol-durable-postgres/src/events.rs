//! Group commit for events: every `append_events` call of a store handle goes through one
//! writer task that holds the first batch for a moment (20 ms at most) so the events of many
//! steps and runs share one statement and one transaction, then answers every caller. Order
//! is kept: batches are written in the order they arrived, and each run's events come from one
//! writer that waits for its previous batch.

use std::sync::Arc;
use std::time::Duration;

use smol_durable_core::store::{EventRow, StoreResult};
use smol_durable_core::{StoreError, StoreErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::connections::Connections;
use crate::sql::{self, Sql};

/// How long the first events of a batch wait for company.
const HOLD: Duration = Duration::from_millis(20);

type Request = (Vec<EventRow>, oneshot::Sender<StoreResult<()>>);

#[derive(Debug)]
pub(crate) struct EventWriter {
    inbox: mpsc::UnboundedSender<Request>,
    task: JoinHandle<()>,
}

impl EventWriter {
    pub(crate) fn new(connections: Arc<Connections>, sql: Arc<Sql>) -> Self {
        let (inbox, requests) = mpsc::unbounded_channel();
        Self {
            inbox,
            task: tokio::spawn(write(connections, sql, requests)),
        }
    }

    pub(crate) async fn append(&self, events: &[EventRow]) -> StoreResult<()> {
        let events = events.iter().map(sql::event_row).collect();
        let (done, answer) = oneshot::channel();
        let gone = || {
            StoreError::new(
                StoreErrorKind::Unavailable,
                "append_events",
                "the event writer has stopped",
            )
        };
        self.inbox.send((events, done)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write(
    connections: Arc<Connections>,
    sql: Arc<Sql>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let hold = tokio::time::sleep(HOLD);
        tokio::pin!(hold);
        loop {
            tokio::select! {
                next = requests.recv() => match next {
                    Some(request) => batch.push(request),
                    None => break,
                },
                () = &mut hold => break,
            }
        }
        let events: Vec<&EventRow> = batch.iter().flat_map(|(events, _)| events).collect();
        if append(&connections, &sql, &events).await.is_ok() {
            for (_, done) in batch {
                let _ = done.send(Ok(()));
            }
            continue;
        }
        // One caller's bad events must not cost the others theirs: each on its own.
        for (events, done) in batch {
            let events: Vec<&EventRow> = events.iter().collect();
            let _ = done.send(append(&connections, &sql, &events).await);
        }
    }
}

async fn append(connections: &Connections, sql: &Sql, events: &[&EventRow]) -> StoreResult<()> {
    let mut connection = connections.take("append_events").await?;
    sql::append_events(&mut connection, sql, events).await?;
    connections.keep(connection);
    Ok(())
}
