//! [`Engine::signal`] and [`Engine::waits`]: answering waiting runs from the host.

use serde_json::Value;

use super::handle::Engine;
use crate::decide::{stored_deadline, stored_names, takes_signals};
use crate::events::{EventMetadata, EventType, WorkflowEvent};
use crate::limits::json_len;
use crate::schema::OutputSchema;
use crate::signals::{check_signal_name, OpenWait, SignalOptions, SignalReceipt};
use crate::store::{EventRow, NewSignal, RunRecord, SignalSend, SignalState, WaitFilter};
use crate::Error;

impl Engine {
    /// Sends a signal named `name` with `payload` to a run (a root run or a child): the next
    /// wait of that run on `name` receives it; one waiting now continues at once (a parked
    /// run becomes due for any worker). Stored durably first: a signal sent before anyone
    /// waits stays in the run's mailbox, oldest first.
    ///
    /// Refused, storing nothing: an unknown run ([`Error::RunNotFound`]), a finished one
    /// ([`Error::InvalidState`]), a bad name, a payload over
    /// [`Limits::max_signal_bytes`](crate::Limits::max_signal_bytes), or one that does not
    /// match the `schema` of the wait open for it ([`Error::InvalidRequest`], listing the
    /// validation errors). With [`SignalOptions::idempotency_key`], sending again answers the
    /// first receipt with `duplicate: true`.
    pub async fn signal(
        &self,
        run_id: &str,
        name: &str,
        payload: Value,
        options: SignalOptions,
    ) -> Result<SignalReceipt, Error> {
        check_signal_name(name).map_err(Error::InvalidRequest)?;
        if options.idempotency_key.as_deref() == Some("") {
            return Err(Error::InvalidRequest(
                "an idempotency key must not be empty".to_owned(),
            ));
        }
        let max = self.shared.limits.max_signal_bytes;
        let bytes = json_len(&payload);
        if bytes > max {
            return Err(Error::InvalidRequest(format!(
                "the signal payload is {bytes} bytes, more than the {max}-byte limit \
                 (Limits::max_signal_bytes)"
            )));
        }
        let store = &self.shared.store;
        let run = store
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound {
                run_id: run_id.to_owned(),
                store: store.describe(),
            })?;
        // With a key the store answers a repeated send first, even for a run finished since.
        if options.idempotency_key.is_none() && !takes_signals(&run.state) {
            return Err(refused_finished(&run.run_id, run.state));
        }
        let filter = WaitFilter {
            run_id: Some(run.run_id.clone()),
            ..WaitFilter::default()
        };
        // The wait it goes to is the oldest open one on its name: its schema decides now
        // (and the waiting script's own again when it takes the signal).
        let now = self.shared.clock.now_ms();
        let mut waiting = None;
        for step in store.list_open_waits(&filter).await? {
            let in_time = stored_deadline(&step)?.is_none_or(|deadline| now <= deadline);
            if in_time && stored_names(&step)?.iter().any(|waited| waited == name) {
                waiting = Some(step);
                break;
            }
        }
        if let Some(schema) = waiting.as_ref().and_then(|step| step.input.get("schema")) {
            if !schema.is_null() {
                let errors = OutputSchema::compile(schema)
                    .map(|schema| schema.errors(&payload))
                    .map_err(Error::InvalidRequest)?;
                if !errors.is_empty() {
                    return Err(Error::InvalidRequest(format!(
                        "the signal {name:?} does not match the schema of the wait for it in \
                         run {}: {}",
                        run.run_id,
                        errors.join("; ")
                    )));
                }
            }
        }
        let sent = store
            .send_signal(NewSignal {
                signal_id: crate::new_id("signal"),
                run_id: run.run_id.clone(),
                name: name.to_owned(),
                payload,
                idempotency_key: options.idempotency_key,
                now,
            })
            .await?;
        match sent {
            SignalSend::Stored(signal) => {
                let delivered = waiting.is_some();
                self.shared.signal_bell.notify_waiters();
                self.record_signal(&run, &signal.signal_id, name, delivered, now)
                    .await;
                Ok(SignalReceipt {
                    signal_id: signal.signal_id,
                    duplicate: false,
                    delivered,
                })
            }
            SignalSend::Duplicate(signal) => Ok(SignalReceipt {
                delivered: signal.state == SignalState::Consumed || waiting.is_some(),
                signal_id: signal.signal_id,
                duplicate: true,
            }),
            SignalSend::RunNotFound => Err(Error::RunNotFound {
                run_id: run_id.to_owned(),
                store: store.describe(),
            }),
            SignalSend::RunFinished(state) => Err(refused_finished(&run.run_id, state)),
        }
    }

    /// The waits that have not ended (of runs that have not finished), oldest first: what a
    /// human may be asked to answer.
    pub async fn waits(&self, filter: &WaitFilter) -> Result<Vec<OpenWait>, Error> {
        self.shared
            .store
            .list_open_waits(filter)
            .await?
            .iter()
            .map(OpenWait::from_step)
            .collect()
    }

    /// Records a `workflow.signal_received` event on the signalled run. The signal is stored
    /// whatever happens here: a lost event is only a log line.
    async fn record_signal(
        &self,
        run: &RunRecord,
        signal_id: &str,
        name: &str,
        delivered: bool,
        now: i64,
    ) {
        let metadata = EventMetadata {
            run_id: run.root_run_id.clone(),
            workflow_run_id: (!run.is_root()).then(|| run.run_id.clone()),
            ..EventMetadata::default()
        };
        let event = WorkflowEvent::new(EventType::SignalReceived, metadata)
            .with("signalId", signal_id)
            .with("name", name)
            .with("delivered", delivered)
            .with("receivedAt", crate::clock::rfc3339_ms(now));
        let record = EventRow::emitted(
            &event,
            run.run_id.clone(),
            run.root_run_id.clone(),
            None,
            now,
        );
        if let Err(error) = self.shared.store.append_events(&[record]).await {
            tracing::warn!(%error, signal_id, "could not record the signal_received event");
        }
        for sink in &self.shared.event_sinks {
            sink.emit(&event).await;
        }
    }
}

fn refused_finished(run_id: &str, state: crate::store::State) -> Error {
    Error::InvalidState {
        run_id: run_id.to_owned(),
        state,
        operation: "signalled (only unfinished runs take signals)",
    }
}
