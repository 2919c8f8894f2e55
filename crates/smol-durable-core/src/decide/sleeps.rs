//! Sleeps: `wakeAt` is fixed when the row is inserted and read back from `input_json` forever
//! after; a live lease held by someone else never delays a sleep past its `wakeAt`.

use serde_json::Value;

use crate::store::StepRecord;
use crate::Error;

/// When a sleep of `duration_ms` that starts at `now` ends: stored as the new row's `wakeAt`.
pub fn sleep_wake_at(now: i64, duration_ms: u64) -> i64 {
    now.saturating_add(i64::try_from(duration_ms).unwrap_or(i64::MAX))
}

/// The stored `wakeAt` of a sleep row.
pub fn wake_at(row: &StepRecord) -> Result<i64, Error> {
    row.input
        .get("wakeAt")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            Error::Store(crate::StoreError::new(
                crate::StoreErrorKind::Corrupt,
                "decide_step",
                format!(
                    "sleep step {} ({}) has no integer wakeAt in its input",
                    row.step_id, row.checkpoint_name
                ),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{row, SIG};
    use crate::decide::{decide_step, StepDecision};
    use crate::store::{State, StepKind};
    use serde_json::json;

    fn sleep_row(state: State, lease: Option<i64>) -> StepRecord {
        let mut stored = row(state, lease, 1);
        stored.kind = StepKind::Sleep;
        stored
    }

    fn decide(existing: Option<&StepRecord>, now: i64) -> Result<StepDecision, Error> {
        decide_step(existing, &StepKind::Sleep, SIG, now)
    }

    #[test]
    fn sleep_without_row_inserts_with_wake_at_from_now() {
        assert_eq!(decide(None, 1_000).ok(), Some(StepDecision::Insert));
        assert_eq!(sleep_wake_at(1_000, 250), 1_250);
        assert_eq!(sleep_wake_at(1_000, u64::MAX), i64::MAX);
    }

    #[test]
    fn a_held_sleep_waits_and_an_expired_one_is_reclaimed() {
        // Stored wakeAt is 500 whatever now says.
        let running = sleep_row(State::Running, Some(10_000));
        assert_eq!(
            decide(Some(&running), 100).ok(),
            Some(StepDecision::Wait {
                lease_expires_at: 500
            }),
            "looked at again when due, not when the lease ends"
        );
        assert_eq!(wake_at(&running).ok(), Some(500));
        let expired = sleep_row(State::Running, Some(50));
        assert_eq!(
            decide(Some(&expired), 100).ok(),
            Some(StepDecision::Reclaim {
                expected_state: State::Running,
                expected_fence: 1
            })
        );
    }

    #[test]
    fn a_due_sleep_never_waits_for_another_lease() {
        let held = sleep_row(State::Running, Some(10_000));
        assert_eq!(
            decide(Some(&held), 600).ok(),
            Some(StepDecision::Reclaim {
                expected_state: State::Running,
                expected_fence: 1
            })
        );
    }

    #[test]
    fn completed_sleep_replays_and_corrupt_sleep_is_an_error() {
        let done = sleep_row(State::Completed, None);
        assert!(matches!(
            decide(Some(&done), 0),
            Ok(StepDecision::Replay(_))
        ));
        let mut without_result = done.clone();
        without_result.result = None;
        assert_eq!(
            decide(Some(&without_result), 0).ok(),
            Some(StepDecision::Replay(Value::Null))
        );
        let winner = crate::decide::resolve_fence_conflict(Some(&without_result)).ok();
        assert_eq!(
            winner,
            Some(crate::decide::FenceResolution::Adopt(Value::Null)),
            "a completed sleep needs no stored result"
        );
        let mut broken = sleep_row(State::Running, None);
        broken.input = json!({"durationMs": 10});
        assert!(decide(Some(&broken), 0).is_err());
    }
}
