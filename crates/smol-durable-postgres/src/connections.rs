//! The connections a store keeps between its operations.
//!
//! sqlx tests every connection given back to its pool with a round trip of its own (a `Sync`
//! and its `ReadyForQuery`, in `PoolConnection::return_to_pool`; unlike the test before a
//! connection is handed out, it cannot be turned off). With one statement per operation, that
//! doubles the messages, wake-ups and server work of every step. So an operation that ended
//! cleanly leaves its connection here instead, and the next one takes it back without asking
//! the pool; connections unused for [`LINGER`] go back to the pool (and its test), and so
//! does every connection whose operation failed or was dropped half way, which the pool's
//! test then resynchronises or discards.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use smol_durable_core::store::StoreResult;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::sql::map_error;

/// How long a kept connection waits for its next operation before going back to the pool.
const LINGER: Duration = Duration::from_millis(50);
/// Every this many sweeps (30 s) all kept connections go back to the pool, busy or not: the
/// pool retires a connection past its lifetime only when it is given back.
const RECYCLE_EVERY: u32 = 600;

/// Connections kept between operations: at most half the pool (none of a one-connection
/// pool), and only while the pool is not exhausted, so whoever waits on the pool (another
/// operation, the listener reconnecting, a host application sharing it) is served by the next
/// connection given back.
#[derive(Debug)]
pub(crate) struct Connections {
    pool: PgPool,
    kept: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    most: usize,
}

impl Connections {
    /// The store's connections, and a task that gives back those unused for [`LINGER`]
    /// (it ends with the last handle).
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        let most = (pool.options().get_max_connections() / 2) as usize;
        let connections = Arc::new(Self {
            pool,
            kept: Mutex::new(Vec::new()),
            most,
        });
        tokio::spawn(give_back_unused(Arc::downgrade(&connections)));
        connections
    }

    /// The connection kept last (the most likely to be warm), else one from the pool.
    pub(crate) async fn take(&self, op: &'static str) -> StoreResult<PoolConnection<Postgres>> {
        if !self.pool.is_closed() {
            let kept = self.kept.lock().ok().and_then(|mut kept| kept.pop());
            if let Some((connection, _)) = kept {
                return Ok(connection);
            }
        }
        self.pool.acquire().await.map_err(|e| map_error(op, e))
    }

    /// Keeps a connection whose operation ended cleanly (else it goes back to the pool).
    pub(crate) fn keep(&self, connection: PoolConnection<Postgres>) {
        // Every connection open and none idle: someone may be waiting on the pool.
        let exhausted = self.pool.num_idle() == 0
            && self.pool.size() >= self.pool.options().get_max_connections();
        if self.pool.is_closed() || exhausted {
            return;
        }
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() < self.most {
                kept.push((connection, Instant::now()));
            }
        }
    }

    /// Gives the connections kept longer than `linger` back to the pool.
    fn give_back(&self, linger: Duration) {
        let unused: Vec<_> = match self.kept.lock() {
            Ok(mut kept) => {
                let now = Instant::now();
                let still = kept
                    .iter()
                    .position(|(_, at)| now.duration_since(*at) < linger)
                    .unwrap_or(kept.len());
                // Oldest first: the unused ones are a prefix.
                kept.drain(..still).collect()
            }
            Err(_) => Vec::new(),
        };
        // Dropped outside the lock: each goes back to the pool.
        drop(unused);
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // A connection given back to the pool spawns a task; outside a runtime (the store
        // outlived it) that would panic, so the kept ones are closed instead.
        if tokio::runtime::Handle::try_current().is_err() {
            if let Ok(kept) = self.kept.get_mut() {
                for (connection, _) in kept.drain(..) {
                    drop(connection.detach());
                }
            }
        }
    }
}

async fn give_back_unused(connections: Weak<Connections>) {
    let mut sweeps: u32 = 0;
    loop {
        tokio::time::sleep(LINGER).await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        sweeps = sweeps.wrapping_add(1);
        let linger = if connections.pool.is_closed() || sweeps.is_multiple_of(RECYCLE_EVERY) {
            Duration::ZERO
        } else {
            LINGER
        };
        connections.give_back(linger);
    }
}
