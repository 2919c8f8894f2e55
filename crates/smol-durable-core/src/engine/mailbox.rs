//! The open waits of one attempt, and the pump that hands them the signals in their runs'
//! mailboxes.
//!
//! One attempt executes a run tree at a time, so the waits registered here are all the waits of
//! its runs that can take a signal now; serving them in registration order here is serving
//! them in registration order. Each hand-over is one [`DurableStore::consume_signal`] (signal
//! `pending` → `consumed` and the wait's step `running` → `completed`, or neither), so a signal
//! is never delivered twice and a wait never takes two. Pumps take turns (a tokio mutex), so
//! two waits of one run never race for the same signal in this process; a zombie of another
//! process loses on the step's fence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::oneshot;

use crate::decide::{serving_wait, WaitOutcome};
use crate::schema::OutputSchema;
use crate::store::{ConsumeSignal, SignalConsume, SignalRecord};
use crate::{DurableStore, Error};

/// How many pending signals one pump reads at a time.
const PUMP_BATCH: usize = 64;

/// What a registered wait is handed.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A signal, consumed for the wait's step (which is now completed with it).
    Received(WaitOutcome),
    /// The wait's step is no longer ours (its fence moved on): decide again.
    LeaseLost,
}

/// A wait registered with the mailbox, kept in the order the script made the calls. Until its
/// step is claimed it is a placeholder (`step` is `None`): it holds its place in line, so a
/// signal it would take is not handed to a later wait meanwhile.
struct OpenWait {
    key: u64,
    order: u64,
    run_id: String,
    names: Vec<String>,
    step: Option<ClaimedWait>,
    answer: Option<oneshot::Sender<Delivery>>,
}

/// What a wait knows once its step is claimed.
pub(crate) struct ClaimedWait {
    pub step_id: String,
    pub fence: u32,
    pub deadline: Option<i64>,
    pub schema: Option<OutputSchema>,
}

/// The open waits of an attempt.
#[derive(Default)]
pub(crate) struct Mailbox {
    turn: tokio::sync::Mutex<()>,
    waits: Mutex<Vec<OpenWait>>,
    next_key: AtomicU64,
    next_order: AtomicU64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.waits.lock().map(|waits| waits.len()).unwrap_or(0);
        f.debug_struct("Mailbox").field("open", &open).finish()
    }
}

/// A wait's place in the mailbox; dropping it gives the place up.
pub(crate) struct Registration {
    mailbox: Arc<Mailbox>,
    key: u64,
    pub answer: oneshot::Receiver<Delivery>,
}

impl Registration {
    /// The wait's step is claimed: from now on pumps hand it signals.
    pub fn claimed(&self, step: ClaimedWait) {
        if let Ok(mut waits) = self.mailbox.waits.lock() {
            if let Some(wait) = waits.iter_mut().find(|wait| wait.key == self.key) {
                wait.step = Some(step);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.mailbox.remove(self.key);
    }
}

/// A signal the pump refused: its payload does not match the wait's schema.
#[derive(Debug)]
pub(crate) struct Refused {
    pub signal: SignalRecord,
    pub errors: Vec<String>,
}

impl Mailbox {
    /// A wait's place in line, taken when the script makes the call: waits on one name are
    /// served in the order the script made them, not the order their claims completed in.
    pub fn ticket(&self) -> u64 {
        self.next_order.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the place `order` in line for a wait of `run_id` on `names` (a placeholder until
    /// [`Registration::claimed`]).
    pub fn reserve(self: &Arc<Self>, order: u64, run_id: &str, names: &[String]) -> Registration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        if let Ok(mut waits) = self.waits.lock() {
            let at = waits.partition_point(|wait| wait.order < order);
            waits.insert(
                at,
                OpenWait {
                    key,
                    order,
                    run_id: run_id.to_owned(),
                    names: names.to_vec(),
                    step: None,
                    answer: Some(answer),
                },
            );
        }
        Registration {
            mailbox: Arc::clone(self),
            key,
            answer: receiver,
        }
    }

    fn remove(&self, key: u64) -> Option<OpenWait> {
        let mut waits = self.waits.lock().ok()?;
        let index = waits.iter().position(|wait| wait.key == key)?;
        Some(waits.remove(index))
    }

    /// Waits for this attempt's turn at the mailbox (pumps and timeouts take turns).
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Unregisters a wait during a turn, so no pump serves it any more; `false` when it was
    /// no longer registered (it was served, or dropped).
    pub fn withdraw(&self, _turn: &tokio::sync::MutexGuard<'_, ()>, key: &Registration) -> bool {
        self.remove(key.key).is_some()
    }

    /// Hands the pending signals of `run_id` to its open waits, oldest signal first, each to
    /// the first registered wait that takes it; refuses (marks rejected) a signal whose payload
    /// does not match that wait's schema. Call it during a [`turn`](Self::turn).
    pub async fn pump(
        &self,
        _turn: &tokio::sync::MutexGuard<'_, ()>,
        store: &dyn DurableStore,
        run_id: &str,
        now: i64,
    ) -> Result<Vec<Refused>, Error> {
        let mut refused = Vec::new();
        loop {
            let names = self.names_of(run_id);
            if names.is_empty() {
                return Ok(refused);
            }
            let signals = store.pending_signals(run_id, &names, PUMP_BATCH).await?;
            let full = signals.len() == PUMP_BATCH;
            let mut progressed = false;
            for signal in signals {
                let Some((key, step_id, fence, errors)) = self.serving(run_id, &signal) else {
                    continue;
                };
                if !errors.is_empty() {
                    let reason = json!({
                        "message": format!(
                            "the signal's payload does not match the wait's schema: {}",
                            errors.join("; ")
                        ),
                        "errors": errors,
                    });
                    store.reject_signal(&signal.signal_id, reason, now).await?;
                    refused.push(Refused { signal, errors });
                    progressed = true;
                    continue;
                }
                let outcome = WaitOutcome::Received {
                    name: signal.name.clone(),
                    signal_id: signal.signal_id.clone(),
                    value: signal.payload.clone(),
                };
                let consumed = store
                    .consume_signal(ConsumeSignal {
                        signal_id: signal.signal_id.clone(),
                        step_id,
                        fence,
                        result: outcome.to_result(),
                        now,
                    })
                    .await?;
                let delivery = match consumed {
                    SignalConsume::Consumed(_) => Delivery::Received(outcome),
                    // Taken meanwhile (another process's send was a duplicate, or it was
                    // rejected): the next signal.
                    SignalConsume::SignalTaken(_) => continue,
                    SignalConsume::StepConflict(_) => Delivery::LeaseLost,
                };
                if let Some(answer) = self.remove(key).and_then(|wait| wait.answer) {
                    let _ = answer.send(delivery);
                }
                progressed = true;
            }
            // A full batch that served nobody holds only signals stored after the deadlines of
            // the waits that would take them: they stay for later waits.
            if !full || !progressed {
                return Ok(refused);
            }
        }
    }

    /// The names the open waits of `run_id` wait for.
    fn names_of(&self, run_id: &str) -> Vec<String> {
        let Ok(waits) = self.waits.lock() else {
            return Vec::new();
        };
        let mut names: Vec<String> = waits
            .iter()
            .filter(|wait| wait.run_id == run_id)
            .flat_map(|wait| wait.names.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The wait `signal` goes to ([`serving_wait`]): its key, step, fence, and the payload's
    /// schema errors (empty when it matches or there is no schema). `None` when no wait takes
    /// it, or when the first that would is still a placeholder (it stays pending until that
    /// wait is claimed).
    fn serving(
        &self,
        run_id: &str,
        signal: &SignalRecord,
    ) -> Option<(u64, String, u32, Vec<String>)> {
        let waits = self.waits.lock().ok()?;
        let of_run: Vec<&OpenWait> = waits.iter().filter(|wait| wait.run_id == run_id).collect();
        let index = serving_wait(
            of_run.iter().map(|wait| {
                let deadline = wait.step.as_ref().and_then(|step| step.deadline);
                (wait.names.as_slice(), deadline)
            }),
            signal,
        )?;
        let wait = of_run[index];
        let step = wait.step.as_ref()?;
        let errors = step
            .schema
            .as_ref()
            .map(|schema| schema.errors(&signal.payload))
            .unwrap_or_default();
        Some((wait.key, step.step_id.clone(), step.fence, errors))
    }
}
