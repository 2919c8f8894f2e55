//! Noticing commits of other processes cheaply, for [`DurableStore::signal_sent`]: SQLite has
//! no notifications, but every commit in WAL mode changes the `-wal` file (its size, or its
//! modification time when the log restarts after a checkpoint). One task per store handle looks
//! at it every [`LOOK_EVERY`], from the first wait on until the handle is dropped: a wait
//! learns of a signal within milliseconds instead of its 250 ms poll, at the cost of a `stat`
//! call every 10 ms (a task that stopped when nobody waited could miss a waiter that came just
//! as it stopped).
//!
//! [`DurableStore::signal_sent`]: smol_durable_core::DurableStore::signal_sent

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the WAL file is looked at while somebody waits.
const LOOK_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct Changes {
    wal: PathBuf,
    seen: watch::Sender<u64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Changes {
    /// Watches the WAL file of the database at `path`.
    pub(crate) fn new(path: &std::path::Path) -> Self {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: PathBuf::from(wal),
            seen: watch::channel(0).0,
            task: Mutex::new(None),
        }
    }

    /// Resolves at the next change of the WAL file (any commit, this process's included).
    pub(crate) async fn next(&self) {
        let mut changed = self.seen.subscribe();
        self.start();
        if changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn start(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let (wal, seen) = (self.wal.clone(), self.seen.clone());
        *task = Some(tokio::spawn(async move {
            let look = || {
                std::fs::metadata(&wal).ok().map(|meta| {
                    (
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    )
                })
            };
            let mut last = look();
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                let now = look();
                if now != last {
                    last = now;
                    seen.send_modify(|count| *count = count.wrapping_add(1));
                }
            }
        }));
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}
