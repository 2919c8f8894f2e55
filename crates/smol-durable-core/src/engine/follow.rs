//! Following a run from outside: waiting for its end and reading its events as they are stored,
//! whichever process (a worker, another host) executes it.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{self, BoxStream};

use super::handle::Engine;
use super::options::RunOutput;
use super::usage::ledger_usage;
use crate::events::EventType;
use crate::store::{ClaimScope, EventRecord, State};
use crate::Error;

/// The longest pause between two looks at a run being followed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// How long a finished run's events are still looked for: the last ones are written just after
/// the run's end is recorded.
const LAST_EVENTS_GRACE: Duration = Duration::from_secs(2);

impl Engine {
    /// Waits until run `run_id` finishes, whoever executes it, and returns its result, or its
    /// failure as the typed error the executing process returned (read back from the stored
    /// reason with [`Error::from_failure_reason`]); a cancelled run is [`Error::Cancelled`].
    ///
    /// Reads the store every [`Limits::wait_poll`](crate::Limits::wait_poll), slowing down to
    /// once a second. It waits without limit: a run nobody executes (not submitted and its
    /// process gone) never finishes until it is resumed; wrap the call in
    /// `tokio::time::timeout` to bound it.
    pub async fn wait(&self, run_id: &str) -> Result<RunOutput, Error> {
        let mut poll = self.shared.limits.wait_poll;
        loop {
            let status = self.status(run_id).await?;
            let run = status.run;
            match run.state {
                State::Completed => {
                    let token_usage =
                        ledger_usage(self.shared.store.as_ref(), &run.root_run_id).await?;
                    return Ok(RunOutput {
                        result: run.result().cloned().unwrap_or_default(),
                        attempt: status.attempts.last().map_or(0, |attempt| attempt.attempt),
                        task_id: run.task_id,
                        run_id: run.run_id,
                        token_usage,
                    });
                }
                State::Failed => {
                    return Err(run
                        .failure_reason
                        .as_ref()
                        .map(Error::from_failure_reason)
                        .unwrap_or_else(|| Error::Recorded {
                            kind: crate::ErrorKind::Script,
                            message: format!("workflow run {} failed", run.run_id),
                        }))
                }
                State::Cancelled => return Err(Error::Cancelled),
                _ => {}
            }
            crate::clock::sleep_for(self.shared.clock.as_ref(), poll).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// The stored events of run `run_id` and its children, from the first, as they are
    /// written, whoever executes the run; the stream ends after the run has finished (or, for a
    /// run started in a process rather than submitted, its owner is gone: nobody executes it
    /// until it is resumed) and its last event was read. An
    /// error (a store error, a run that does not exist) ends it after yielding the error.
    ///
    /// It polls like [`wait`](Self::wait). A submitted run waiting for a worker keeps it open.
    pub fn follow_events(&self, run_id: &str) -> BoxStream<'static, Result<EventRecord, Error>> {
        struct Following {
            engine: Engine,
            run_id: String,
            after_seq: i64,
            ready: VecDeque<EventRecord>,
            poll: Duration,
            /// When the run was first seen finished.
            finished_at: Option<std::time::Instant>,
            /// Whether the last event read is a run's result or error: once the run has
            /// finished, nothing comes after it.
            at_end: bool,
            done: bool,
        }
        let start = Following {
            engine: self.clone(),
            run_id: run_id.to_owned(),
            after_seq: 0,
            ready: VecDeque::new(),
            poll: self.shared.limits.wait_poll,
            finished_at: None,
            at_end: false,
            done: false,
        };
        Box::pin(stream::unfold(start, |mut state| async move {
            loop {
                if let Some(event) = state.ready.pop_front() {
                    return Some((Ok(event), state));
                }
                if state.done {
                    return None;
                }
                let store = state.engine.shared.store.as_ref();
                let read = store.read_events(&state.run_id, state.after_seq, 256).await;
                let events = match read {
                    Ok(events) => events,
                    Err(error) => {
                        state.done = true;
                        return Some((Err(error.into()), state));
                    }
                };
                if let Some(last) = events.last() {
                    state.after_seq = last.seq;
                    state.at_end = ends_run(last, &state.run_id);
                    state.poll = state.engine.shared.limits.wait_poll;
                    state.ready.extend(events);
                    continue;
                }
                match state.finished_at {
                    Some(_) if state.at_end => state.done = true,
                    Some(at) if at.elapsed() >= LAST_EVENTS_GRACE => state.done = true,
                    Some(_) => {}
                    None => match state.engine.status(&state.run_id).await {
                        // A local run whose owner is gone waits for a resume; a submitted one,
                        // for the next worker to claim it.
                        Ok(status)
                            if status.run.state.is_terminal()
                                || (status.owner_gone
                                    && status.task.claim_scope == ClaimScope::Local) =>
                        {
                            state.finished_at = Some(std::time::Instant::now());
                            // Its last events may have been written since the read above.
                            continue;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            state.done = true;
                            return Some((Err(error), state));
                        }
                    },
                }
                if state.done {
                    continue;
                }
                let pause = state.poll;
                state.poll = (state.poll * 2).min(MAX_POLL);
                crate::clock::sleep_for(state.engine.shared.clock.as_ref(), pause).await;
            }
        }))
    }
}

/// Whether `event` is the last one a run writes: its result or its error.
fn ends_run(event: &EventRecord, run_id: &str) -> bool {
    event.run_id == run_id && matches!(event.typed(), Some(EventType::Result | EventType::Error))
}
