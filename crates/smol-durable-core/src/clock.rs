//! Time as the engine sees it.
//!
//! Every lease, heartbeat and sleep goes through a [`Clock`], so tests can move time forward with
//! [`ManualClock`] instead of waiting for real leases to expire.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// Source of "now" (Unix epoch milliseconds) and of waiting until a point in time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Resolves once [`Clock::now_ms`] has reached `deadline_ms` (at once when it already has).
    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()>;
}

/// Waits for `duration` on `clock`.
pub async fn sleep_for(clock: &dyn Clock, duration: Duration) {
    let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    clock.sleep_until(clock.now_ms().saturating_add(ms)).await;
}

/// Unix epoch milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2026-12-03T09:40:45.683Z` (event `startTime`s, `history` times).
///
/// ```
/// assert_eq!(smol_durable_core::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(smol_durable_core::rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
/// ```
pub fn rfc3339_ms(epoch_ms: i64) -> String {
    let nanos = i128::from(epoch_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        // Beyond year 9999: no real timestamp.
        Err(_) => format!("{epoch_ms}ms"),
    }
}

/// The wall clock, with tokio timers for waiting.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()> {
        let remaining = deadline_ms.saturating_sub(self.now_ms()).max(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(remaining as u64)))
    }
}

/// A clock that only moves when told to; sleepers wake when [`ManualClock::advance`] passes
/// their deadline.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use smol_durable_core::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// let sleeper = clock.sleep_until(1_500);
/// clock.advance(std::time::Duration::from_millis(500));
/// sleeper.await; // already due
/// assert_eq!(clock.now_ms(), 1_500);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    ticks: Arc<watch::Sender<i64>>,
}

impl ManualClock {
    /// A clock frozen at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        let (ticks, _) = watch::channel(start_ms);
        Self {
            now: Arc::new(AtomicI64::new(start_ms)),
            ticks: Arc::new(ticks),
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = self.now.fetch_add(ms, Ordering::SeqCst).saturating_add(ms);
        self.ticks.send_replace(now);
    }

    /// Sets the time (never backwards) and wakes due sleepers.
    pub fn set(&self, now_ms: i64) {
        let now = self.now.fetch_max(now_ms, Ordering::SeqCst).max(now_ms);
        self.ticks.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()> {
        let mut ticks = self.ticks.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, so a deadline already passed resolves
            // at once; a dropped sender (clock gone) also ends the wait.
            let _ = ticks.wait_for(|now| *now >= deadline_ms).await;
        })
    }
}
