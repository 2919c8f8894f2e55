//! `LISTEN/NOTIFY` for idle workers: one listening connection per store handle, started on
//! first use. Transactions that submit a runner task or hand one back `pg_notify` the schema's
//! channel; this listener wakes every waiter in the process. A notification lost while the
//! connection is down costs only latency: workers poll as well.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub(crate) struct WorkListener {
    pool: PgPool,
    channel: String,
    notify: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WorkListener {
    pub(crate) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            pool,
            channel,
            notify: Arc::new(Notify::new()),
            task: Mutex::new(None),
        }
    }

    /// Resolves at the next notification (or at once, if one arrived with nobody waiting).
    pub(crate) async fn notified(&self) {
        let notified = self.notify.notified();
        self.start();
        notified.await;
    }

    fn start(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(listen(
            self.pool.clone(),
            self.channel.clone(),
            Arc::clone(&self.notify),
        )));
    }
}

impl Drop for WorkListener {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}

async fn listen(pool: PgPool, channel: String, notify: Arc<Notify>) {
    loop {
        let listening: Result<std::convert::Infallible, sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            // Anything sent while we were not listening is unknown: let waiters look.
            wake_all(&notify);
            loop {
                listener.recv().await?;
                wake_all(&notify);
            }
        }
        .await;
        let Err(error) = listening;
        tracing::debug!(%error, "LISTEN connection lost; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wakes every current waiter, and leaves one permit for a waiter about to arrive.
fn wake_all(notify: &Notify) {
    notify.notify_waiters();
    notify.notify_one();
}
