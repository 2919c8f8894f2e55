//! Group commit for step records: every `record_step` call of a store handle goes through one
//! writer task. A record that finds nothing queued is written at once, alone, as a single
//! statement; records that queued up while earlier batches were being written (at most
//! [`BATCHES_IN_FLIGHT`] at once) go into one transaction together — one WAL flush for all of
//! them — each still its own fenced insert-if-absent with its own answer. Nothing is held back
//! to gather company: a batch is only what arrived meanwhile, so a sequential run pays no extra
//! latency and a worker running many runs pays one flush per batch instead of one per step.

use std::sync::Arc;

use smol_durable_core::store::{RecordStep, StepCas, StoreResult};
use smol_durable_core::{StoreError, StoreErrorKind};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::connections::Connections;
use crate::sql::{self, Sql};

/// Most records written in one transaction.
const MAX_BATCH: usize = 128;
/// Batches written at once, each on its own connection: one is written while the next fills
/// up. More splits the queue into smaller batches with a commit each (four in flight gave
/// ≈ 5 % less throughput than two in `scripts/bench-peers`' concurrent shape).
const BATCHES_IN_FLIGHT: usize = 2;

type Request = (RecordStep, oneshot::Sender<StoreResult<StepCas>>);

#[derive(Debug)]
pub(crate) struct RecordWriter {
    inbox: mpsc::UnboundedSender<Request>,
    task: JoinHandle<()>,
}

impl RecordWriter {
    pub(crate) fn new(connections: Arc<Connections>, sql: Arc<Sql>) -> Self {
        let (inbox, requests) = mpsc::unbounded_channel();
        Self {
            inbox,
            task: tokio::spawn(write(connections, sql, requests)),
        }
    }

    /// Writes `record` (see [`DurableStore::record_step`](smol_durable_core::DurableStore::record_step)),
    /// with whatever other records are queued, and answers once it is committed.
    pub(crate) async fn record(&self, record: RecordStep) -> StoreResult<StepCas> {
        let (done, answer) = oneshot::channel();
        let gone = || {
            StoreError::new(
                StoreErrorKind::Unavailable,
                "record_step",
                "the record writer has stopped",
            )
        };
        self.inbox.send((record, done)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write(
    connections: Arc<Connections>,
    sql: Arc<Sql>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        // Waiting for a slot is when the queue fills up into the next batch.
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (connections, sql) = (Arc::clone(&connections), Arc::clone(&sql));
        tokio::spawn(async move {
            write_batch(&connections, &sql, batch).await;
            drop(slot);
        });
    }
}

/// Writes one batch and answers its callers.
async fn write_batch(connections: &Connections, sql: &Sql, mut batch: Vec<Request>) {
    if batch.len() == 1 {
        if let Some((record, done)) = batch.pop() {
            let _ = done.send(alone(connections, sql, record).await);
        }
        return;
    }
    match together(connections, sql, &batch).await {
        Ok(outcomes) => {
            for ((record, done), outcome) in batch.into_iter().zip(outcomes) {
                let _ = done.send(Ok(outcome.answer(record)));
            }
        }
        // The connection failed (the transaction may even have committed): every caller hears
        // so, and the engine's retry layer recognises a record that had committed.
        Err(error) if error.is_retryable() => {
            for (_, done) in batch {
                let _ = done.send(Err(error.clone()));
            }
        }
        // One record's bad data must not cost the others theirs: each on its own (nothing of
        // the failed transaction committed).
        Err(error) => {
            tracing::debug!(%error, records = batch.len(), "a batch of records was refused; writing them one by one");
            for (record, done) in batch {
                let _ = done.send(alone(connections, sql, record).await);
            }
        }
    }
}

/// One record as one statement (its own transaction).
async fn alone(connections: &Connections, sql: &Sql, record: RecordStep) -> StoreResult<StepCas> {
    let mut connection = connections.take("record_step").await?;
    let recorded = sql::record_step(&mut connection, sql, &record).await?;
    connections.keep(connection);
    Ok(recorded.answer(record))
}

/// The records in one transaction, in the order they arrived; their outcomes in that order.
async fn together(
    connections: &Connections,
    sql: &Sql,
    batch: &[Request],
) -> StoreResult<Vec<sql::Recorded>> {
    let mut connection = connections.take("record_step").await?;
    let mut tx = connection
        .begin()
        .await
        .map_err(|e| sql::map_error("record_step", e))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (record, _) in batch {
        outcomes.push(sql::record_step(&mut tx, sql, record).await?);
    }
    tx.commit()
        .await
        .map_err(|e| sql::map_error("record_step", e))?;
    connections.keep(connection);
    Ok(outcomes)
}
