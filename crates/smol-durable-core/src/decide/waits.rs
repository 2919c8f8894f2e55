//! Waits and signals: when a wait's deadline is, which wait a signal goes to, what a wait's
//! step stores, whether a run takes signals, and when a signal makes a parked run due.
//!
//! A wait's deadline is fixed when its row is inserted (`input.deadline`) and read back from it
//! forever after, like a sleep's `wakeAt`: replays and resumes never restart it.

use serde_json::{json, Value};

use crate::store::{SignalRecord, State, StepRecord};
use crate::{Error, StoreError, StoreErrorKind};

/// The deadline of a wait registered at `now`: the `deadline` option (absolute, epoch ms) or
/// `now + timeoutMs`, the earlier of the two when both are given; `None` waits without limit.
pub fn wait_deadline(now: i64, timeout_ms: Option<u64>, deadline: Option<i64>) -> Option<i64> {
    let from_timeout =
        timeout_ms.map(|timeout| now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX)));
    match (deadline, from_timeout) {
        (Some(deadline), Some(timeout)) => Some(deadline.min(timeout)),
        (one, other) => one.or(other),
    }
}

/// The stored deadline of a wait row (`null`: none).
pub fn stored_deadline(row: &StepRecord) -> Result<Option<i64>, Error> {
    match row.input.get("deadline") {
        Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or_else(|| corrupt(row, "deadline")),
        None => Err(corrupt(row, "deadline")),
    }
}

/// The names a wait row waits for.
pub fn stored_names(row: &StepRecord) -> Result<Vec<String>, Error> {
    row.input
        .get("names")
        .and_then(Value::as_array)
        .and_then(|names| {
            names
                .iter()
                .map(|name| name.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| corrupt(row, "names"))
}

fn corrupt(row: &StepRecord, field: &str) -> Error {
    Error::Store(StoreError::new(
        StoreErrorKind::Corrupt,
        "decide_wait",
        format!(
            "wait step {} ({}) has no valid {field} in its input",
            row.step_id, row.checkpoint_name
        ),
    ))
}

/// Whether a wait with these names and deadline takes `signal`: the name matches, and a
/// signal stored after the deadline does not count for it (it stays for a later wait). A
/// signal stored in time still counts when the wait is looked at after its deadline (a run
/// parked past it): the sender answered in time.
pub fn wait_takes(names: &[String], deadline: Option<i64>, signal: &SignalRecord) -> bool {
    names.contains(&signal.name) && deadline.is_none_or(|deadline| signal.created_at <= deadline)
}

/// Which of the open waits of one run, given in registration order as `(names, deadline)`,
/// `signal` goes to: the first that takes it. Two waits on one name are served in the order
/// they were registered.
pub fn serving_wait<'a>(
    waits: impl IntoIterator<Item = (&'a [String], Option<i64>)>,
    signal: &SignalRecord,
) -> Option<usize> {
    waits
        .into_iter()
        .position(|(names, deadline)| wait_takes(names, deadline, signal))
}

/// How a wait ended, as its step stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitOutcome {
    /// A signal arrived.
    Received {
        /// Its name (for `waitForAny`, which one won).
        name: String,
        /// Its id.
        signal_id: String,
        /// Its payload.
        value: Value,
    },
    /// The deadline passed first.
    TimedOut {
        /// The deadline (epoch ms).
        deadline: i64,
    },
}

impl WaitOutcome {
    /// The step result that records this outcome.
    pub fn to_result(&self) -> Value {
        match self {
            Self::Received {
                name,
                signal_id,
                value,
            } => json!({
                "outcome": "received",
                "name": name,
                "signalId": signal_id,
                "value": value,
            }),
            Self::TimedOut { deadline } => json!({ "outcome": "timedOut", "deadline": deadline }),
        }
    }

    /// The outcome a completed wait step recorded (`step_id` and `checkpoint` name the step in
    /// the error about a result that is not one).
    pub fn from_result(result: &Value, step_id: &str, checkpoint: &str) -> Result<Self, Error> {
        let text = |key: &str| result.get(key).and_then(Value::as_str).map(str::to_owned);
        let outcome = match result.get("outcome").and_then(Value::as_str) {
            Some("received") => match (text("name"), text("signalId")) {
                (Some(name), Some(signal_id)) => Some(Self::Received {
                    name,
                    signal_id,
                    value: result.get("value").cloned().unwrap_or(Value::Null),
                }),
                _ => None,
            },
            Some("timedOut") => result
                .get("deadline")
                .and_then(Value::as_i64)
                .map(|deadline| Self::TimedOut { deadline }),
            _ => None,
        };
        outcome.ok_or_else(|| {
            Error::Store(StoreError::new(
                StoreErrorKind::Corrupt,
                "decide_wait",
                format!("wait step {step_id} ({checkpoint}) stores no outcome this version reads"),
            ))
        })
    }
}

/// Whether a run in `state` takes signals: only while it has not finished.
pub fn takes_signals(state: &State) -> bool {
    !state.is_terminal()
}

/// When a task pending for later becomes due because a signal arrived for a wait of its run:
/// now, if it is `pending` with a `not_before` still ahead; otherwise it is left alone
/// (`None`): running tasks pick the signal up themselves, due ones are due already.
pub fn wake_not_before(task_state: &State, not_before: Option<i64>, now: i64) -> Option<i64> {
    (*task_state == State::Pending && not_before.is_some_and(|at| at > now)).then_some(now)
}

/// When a task, about to be (or already) `task_state` with `not_before`, is due because one of
/// the pending `signals` answers one of the open `waits` of its runs ([`wait_takes`]): now.
/// Stores ask this inside the transaction that parks a task (`finish_attempt`: a signal that
/// arrived while the attempt was ending) and the one that stores a signal (`send_signal`: a
/// signal for a parked run), both holding the task, so neither misses the other. A wait row
/// that does not read is skipped: it answers nothing.
pub fn due_for_signals(
    task_state: &State,
    not_before: Option<i64>,
    now: i64,
    waits: &[StepRecord],
    signals: &[SignalRecord],
) -> Option<i64> {
    let at = wake_not_before(task_state, not_before, now)?;
    let answered = waits.iter().any(|wait| {
        let (Ok(names), Ok(deadline)) = (stored_names(wait), stored_deadline(wait)) else {
            return false;
        };
        signals
            .iter()
            .any(|signal| signal.run_id == wait.run_id && wait_takes(&names, deadline, signal))
    });
    answered.then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::row;
    use crate::store::{SignalState, StepKind};

    fn signal(name: &str, created_at: i64) -> SignalRecord {
        SignalRecord {
            signal_id: format!("signal_{name}_{created_at}"),
            run_id: "run_1".into(),
            root_run_id: "run_1".into(),
            name: name.into(),
            payload: json!(1),
            idempotency_key: None,
            state: SignalState::Pending,
            step_id: None,
            reason: None,
            seq: created_at,
            created_at,
            updated_at: created_at,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_deadline_is_the_earlier_of_both_options_or_none() {
        assert_eq!(wait_deadline(1_000, None, None), None);
        assert_eq!(wait_deadline(1_000, Some(500), None), Some(1_500));
        assert_eq!(wait_deadline(1_000, None, Some(9_000)), Some(9_000));
        assert_eq!(wait_deadline(1_000, Some(500), Some(1_200)), Some(1_200));
        assert_eq!(wait_deadline(1_000, Some(u64::MAX), None), Some(i64::MAX));
    }

    #[test]
    fn stored_deadline_and_names_are_read_back_or_corrupt() {
        let mut wait = row(State::Running, Some(10), 1);
        wait.kind = StepKind::Wait;
        wait.input = json!({"names": ["a", "b"], "deadline": 700});
        assert_eq!(stored_deadline(&wait).ok(), Some(Some(700)));
        assert_eq!(stored_names(&wait).ok(), Some(names(&["a", "b"])));
        wait.input = json!({"names": ["a"], "deadline": null});
        assert_eq!(stored_deadline(&wait).ok(), Some(None));
        wait.input = json!({"names": [1]});
        assert!(stored_deadline(&wait).is_err());
        assert!(stored_names(&wait).is_err());
    }

    #[test]
    fn a_signal_goes_to_the_first_registered_wait_that_takes_it() {
        let first = names(&["approval"]);
        let second = names(&["approval", "cancel"]);
        let waits = [(first.as_slice(), None), (second.as_slice(), None)];
        assert_eq!(serving_wait(waits, &signal("approval", 5)), Some(0));
        assert_eq!(serving_wait(waits, &signal("cancel", 5)), Some(1));
        assert_eq!(serving_wait(waits, &signal("other", 5)), None);
    }

    #[test]
    fn a_signal_stored_after_the_deadline_does_not_count_but_one_in_time_does() {
        let approval = names(&["approval"]);
        assert!(wait_takes(&approval, Some(100), &signal("approval", 100)));
        assert!(!wait_takes(&approval, Some(100), &signal("approval", 101)));
        let waits = [
            (approval.as_slice(), Some(100)),
            (approval.as_slice(), None),
        ];
        assert_eq!(
            serving_wait(waits, &signal("approval", 150)),
            Some(1),
            "a late signal stays for the later wait"
        );
    }

    #[test]
    fn outcomes_round_trip_through_the_stored_result() {
        let wait = row(State::Completed, None, 1);
        for outcome in [
            WaitOutcome::Received {
                name: "approval".into(),
                signal_id: "signal_1".into(),
                value: json!({"ok": true}),
            },
            WaitOutcome::TimedOut { deadline: 42 },
        ] {
            let stored = outcome.to_result();
            let read = WaitOutcome::from_result(&stored, &wait.step_id, &wait.checkpoint_name);
            assert_eq!(read.ok(), Some(outcome));
        }
        for broken in [
            json!({"outcome": "lost"}),
            json!({"outcome": "received"}),
            json!(null),
        ] {
            assert!(WaitOutcome::from_result(&broken, "step_1", "step:sig_x").is_err());
        }
    }

    #[test]
    fn only_unfinished_runs_take_signals() {
        assert!(takes_signals(&State::Pending));
        assert!(takes_signals(&State::Running));
        for finished in [State::Completed, State::Failed, State::Cancelled] {
            assert!(!takes_signals(&finished));
        }
    }

    #[test]
    fn a_parked_task_is_due_when_a_pending_signal_answers_an_open_wait() {
        let mut wait = row(State::Failed, None, 1);
        wait.kind = StepKind::Wait;
        wait.input = json!({"names": ["approval"], "deadline": 9_000});
        let waits = [wait];
        let answer = signal("approval", 100);
        let other = signal("other", 100);
        let late = signal("approval", 9_500);
        let due = |signals: &[SignalRecord]| {
            due_for_signals(&State::Pending, Some(9_000), 1_000, &waits, signals)
        };
        assert_eq!(due(std::slice::from_ref(&answer)), Some(1_000));
        assert_eq!(
            due(std::slice::from_ref(&other)),
            None,
            "nobody waits for it"
        );
        assert_eq!(due(&[late]), None, "stored after the deadline");
        assert_eq!(due(&[]), None);
        let mut elsewhere = answer.clone();
        elsewhere.run_id = "run_child".into();
        assert_eq!(due(&[elsewhere]), None, "a signal of another run");
        assert_eq!(
            due_for_signals(&State::Running, Some(9_000), 1_000, &waits, &[answer]),
            None,
            "a running task takes it itself"
        );
    }

    #[test]
    fn a_signal_wakes_only_a_task_pending_for_later() {
        assert_eq!(
            wake_not_before(&State::Pending, Some(5_000), 1_000),
            Some(1_000)
        );
        assert_eq!(
            wake_not_before(&State::Pending, Some(i64::MAX), 1_000),
            Some(1_000)
        );
        assert_eq!(wake_not_before(&State::Pending, Some(500), 1_000), None);
        assert_eq!(wake_not_before(&State::Pending, None, 1_000), None);
        assert_eq!(wake_not_before(&State::Running, Some(5_000), 1_000), None);
        assert_eq!(wake_not_before(&State::Completed, Some(5_000), 1_000), None);
    }
}
