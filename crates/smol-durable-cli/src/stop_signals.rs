//! The signals that stop a command cooperatively: SIGINT (Ctrl-C), SIGTERM (`kill`, service
//! managers) and SIGHUP (a closed terminal) all mean "cancel the run and leave it resumable".

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The stop signals, watched from creation on.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Starts watching. While it lives, these signals no longer kill the process.
    pub fn new() -> anyhow::Result<Self> {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot watch {name}"))
        };
        Ok(Self {
            interrupt: watch(SignalKind::interrupt(), "SIGINT")?,
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
            hangup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for the next one; returns its number (for the exit code, 128 + it).
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => SignalKind::interrupt().as_raw_value(),
            _ = self.terminate.recv() => SignalKind::terminate().as_raw_value(),
            _ = self.hangup.recv() => SignalKind::hangup().as_raw_value(),
        }
    }
}
