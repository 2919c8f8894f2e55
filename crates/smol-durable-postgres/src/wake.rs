//! `LISTEN/NOTIFY`: one listening connection per store handle, started on first use, wakes
//! idle workers (payload `work`: a runner task was submitted, handed back or signalled),
//! callers waiting on a step another worker holds (payload `step:<id>`, sent only for steps a
//! waiter flagged) and waits of a run (payload `signal:<run id>`: a signal was stored for it).
//! A notification lost while the connection is down costs only latency: every waiter also
//! polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Who is waiting for what: idle workers, and waiters keyed by the payload they wait for
/// (`step:<id>`, `signal:<run id>`).
#[derive(Debug, Default)]
struct Waiters {
    work: Notify,
    keyed: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    fn dispatch(&self, payload: &str) {
        if payload == "work" {
            // Every idle worker looks, and one permit is left for a worker about to idle.
            self.work.notify_waiters();
            self.work.notify_one();
            return;
        }
        let waiting = self
            .keyed
            .lock()
            .ok()
            .and_then(|keyed| keyed.get(payload).cloned());
        if let Some(notify) = waiting {
            notify.notify_waiters();
        }
    }

    /// After a reconnect nothing is known about what was missed: everyone looks again.
    fn wake_everyone(&self) {
        self.dispatch("work");
        if let Ok(keyed) = self.keyed.lock() {
            for notify in keyed.values() {
                notify.notify_waiters();
            }
        }
    }
}

/// One waiter's interest in a payload; the map entry goes when the last waiter's does.
struct Registration<'a> {
    waiters: &'a Waiters,
    key: String,
    notify: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut keyed) = self.waiters.keyed.lock() {
            // The map's reference, this one and the waiter's own: nobody else waits.
            if Arc::strong_count(&self.notify) <= 3 {
                keyed.remove(&self.key);
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Listener {
    pool: PgPool,
    channel: String,
    waiters: Arc<Waiters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    pub(crate) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            pool,
            channel,
            waiters: Arc::new(Waiters::default()),
            task: Mutex::new(None),
        }
    }

    /// Resolves at the next `work` notification (or at once, if one arrived with nobody
    /// waiting).
    pub(crate) async fn work(&self) {
        let notified = self.waiters.work.notified();
        self.start();
        notified.await;
    }

    /// Registers interest in `step_id`, runs `flag` (which asks the database to notify, and
    /// says whether the step is still running), then waits for the notification.
    pub(crate) async fn step<F>(&self, step_id: &str, flag: F)
    where
        F: std::future::Future<Output = bool>,
    {
        self.keyed(format!("step:{step_id}"), flag).await;
    }

    /// Resolves at the next signal stored for `run_id`.
    pub(crate) async fn signal(&self, run_id: &str) {
        self.keyed(format!("signal:{run_id}"), async { true }).await;
    }

    async fn keyed<F>(&self, key: String, flag: F)
    where
        F: std::future::Future<Output = bool>,
    {
        let registered = self
            .waiters
            .keyed
            .lock()
            .map(|mut keyed| Arc::clone(keyed.entry(key.clone()).or_default()))
            .ok();
        let Some(notify) = registered else {
            return std::future::pending().await;
        };
        // Removes the entry when this wait ends, also when the caller stops waiting first.
        let _registered = Registration {
            waiters: &self.waiters,
            key,
            notify: Arc::clone(&notify),
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is set, so a notification right after cannot be missed.
        notified.as_mut().enable();
        self.start();
        if flag.await {
            notified.await;
        }
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
            Arc::clone(&self.waiters),
        )));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}

async fn listen(pool: PgPool, channel: String, waiters: Arc<Waiters>) {
    loop {
        let listening: Result<std::convert::Infallible, sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            waiters.wake_everyone();
            loop {
                let notification = listener.recv().await?;
                waiters.dispatch(notification.payload());
            }
        }
        .await;
        let Err(error) = listening;
        tracing::debug!(%error, "LISTEN connection lost; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
