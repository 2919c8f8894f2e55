//! The step table (SPEC §4): replay, insert, wait or reclaim, for every step kind, and how a
//! refused fenced completion resolves.

use serde_json::Value;

use crate::store::{State, StepKind, StepRecord};
use crate::Error;

/// What to do with a step, given the row the store holds (if any).
#[derive(Debug, Clone, PartialEq)]
pub enum StepDecision {
    /// The step completed before: return this stored result, run nothing, bill nothing.
    Replay(Value),
    /// No row: insert one as `running` with fence 1, then run the call.
    Insert,
    /// Another live worker holds it: wait (without taking an agent slot) until it finishes or
    /// its lease expires at `lease_expires_at`, then decide again.
    Wait {
        /// When the holder's lease runs out.
        lease_expires_at: i64,
    },
    /// Take the step over: compare-and-set from `(expected_state, expected_fence)` to
    /// `running` with the fence one higher, then run the call.
    Reclaim {
        /// State the row must still be in.
        expected_state: State,
        /// Fencing token the row must still carry.
        expected_fence: u32,
    },
}

/// Decides a step (the table of SPEC §4), sleeps included: a sleep whose `wakeAt` has passed is
/// reclaimed (and completed) however live its holder's lease is.
///
/// `signature_json` is the canonical signature of the call being made; a stored row with a
/// different one fails with [`Error::SignatureMismatch`].
pub fn decide_step(
    existing: Option<&StepRecord>,
    kind: &StepKind,
    signature_json: &str,
    now: i64,
) -> Result<StepDecision, Error> {
    let Some(row) = existing else {
        return Ok(StepDecision::Insert);
    };
    check_row(row, kind, signature_json)?;
    // A sleep's own rules (`sleeps.rs`): its `wakeAt` must be readable, a due sleep never waits
    // for another holder's lease, and a completed one replays even without a stored result
    // (smol-wf wrote none for some).
    let wake_at = match kind {
        StepKind::Sleep => Some(super::wake_at(row)?),
        _ => None,
    };
    let due = wake_at.is_some_and(|wake_at| wake_at <= now);
    match &row.state {
        State::Completed => Ok(StepDecision::Replay(completed_result(row)?)),
        // A held sleep is looked at again when it is due, at the latest.
        State::Running if lease_is_live(row, now) && !due => Ok(StepDecision::Wait {
            lease_expires_at: row
                .lease_expires_at
                .unwrap_or(now)
                .min(wake_at.unwrap_or(i64::MAX)),
        }),
        State::Running | State::Failed | State::Cancelled | State::Pending => {
            Ok(StepDecision::Reclaim {
                expected_state: row.state.clone(),
                expected_fence: row.fence,
            })
        }
        State::Unknown(value) => Err(unsupported("state", value, row)),
    }
}

/// How a fenced completion that the store refused is resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceResolution {
    /// Another worker completed the step first: every caller sees its result.
    Adopt(Value),
    /// The step moved on without a result this caller can use.
    LeaseLost,
}

/// Resolves a refused compare-and-set on completion: adopt the winner's result, or report
/// that the lease was lost. `current` is the row as the store holds it now.
pub fn resolve_fence_conflict(current: Option<&StepRecord>) -> Result<FenceResolution, Error> {
    match current {
        Some(row) if row.state == State::Completed => {
            Ok(FenceResolution::Adopt(completed_result(row)?))
        }
        _ => Ok(FenceResolution::LeaseLost),
    }
}

/// The result of a completed row; a completed sleep needs none (smol-wf stored none for some).
fn completed_result(row: &StepRecord) -> Result<Value, Error> {
    match row.kind {
        StepKind::Sleep => Ok(row.result.clone().unwrap_or(Value::Null)),
        _ => stored_result(row),
    }
}

pub(super) fn lease_is_live(row: &StepRecord, now: i64) -> bool {
    row.lease_expires_at.is_some_and(|lease| lease > now)
}

pub(super) fn check_row(
    row: &StepRecord,
    kind: &StepKind,
    signature_json: &str,
) -> Result<(), Error> {
    if let StepKind::Unknown(value) = &row.kind {
        return Err(unsupported("kind", value, row));
    }
    if row.input_signature_json != signature_json {
        return Err(Error::SignatureMismatch {
            checkpoint: row.checkpoint_name.clone(),
        });
    }
    // Identical signatures embed the kind, so a different kind means a corrupt row.
    if &row.kind != kind {
        return Err(unsupported("kind", row.kind.as_str(), row));
    }
    Ok(())
}

pub(super) fn stored_result(row: &StepRecord) -> Result<Value, Error> {
    row.result.clone().ok_or_else(|| {
        Error::Store(crate::StoreError::new(
            crate::StoreErrorKind::Corrupt,
            "decide_step",
            format!(
                "completed step {} ({}) has no stored result",
                row.step_id, row.checkpoint_name
            ),
        ))
    })
}

pub(super) fn unsupported(what: &'static str, value: &str, row: &StepRecord) -> Error {
    Error::Unsupported {
        what,
        value: value.to_owned(),
        step_id: row.step_id.clone(),
        checkpoint: row.checkpoint_name.clone(),
    }
}

/// Whether a step's claim may wait until its call has ended, to be written with its completion
/// in one transaction ([`DurableStore::record_step`](crate::DurableStore::record_step)) — or
/// `deferred_claim` after the call started, if it is still running then.
///
/// Only for an agent call whose checkpoint has no row: there is nothing to reclaim and nobody
/// else's claim to respect, and the attempt's own lease already keeps every other process off
/// the run (a deposed attempt's record is fenced by the attempt). Sleeps, waits, signals and
/// child workflows are claimed first: other processes read their rows (a sleep's `wakeAt`, a
/// child's parent step) while they last. A zero `deferred_claim` claims every call first.
pub fn defers_claim(
    kind: &StepKind,
    existing: Option<&StepRecord>,
    deferred_claim: std::time::Duration,
) -> bool {
    *kind == StepKind::Agent && existing.is_none() && !deferred_claim.is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{row, SIG};
    use crate::store::StepKind;
    use serde_json::json;

    fn decide(existing: Option<&StepRecord>, now: i64) -> Result<StepDecision, Error> {
        decide_step(existing, &StepKind::Agent, SIG, now)
    }

    #[test]
    fn only_a_new_agent_call_defers_its_claim() {
        use std::time::Duration;
        let second = Duration::from_secs(1);
        assert!(defers_claim(&StepKind::Agent, None, second));
        assert!(!defers_claim(&StepKind::Agent, None, Duration::ZERO));
        let failed = row(State::Failed, None, 1);
        assert!(!defers_claim(&StepKind::Agent, Some(&failed), second));
        for kind in [
            StepKind::Sleep,
            StepKind::Workflow,
            StepKind::Wait,
            StepKind::Signal,
        ] {
            assert!(!defers_claim(&kind, None, second), "{kind:?}");
        }
    }

    #[test]
    fn no_row_inserts_and_runs() {
        assert_eq!(decide(None, 100).ok(), Some(StepDecision::Insert));
    }

    #[test]
    fn completed_row_replays_its_result() {
        let done = row(State::Completed, None, 1);
        assert_eq!(
            decide(Some(&done), 100).ok(),
            Some(StepDecision::Replay(json!({"output": "done"})))
        );
    }

    #[test]
    fn running_row_with_live_lease_waits() {
        let running = row(State::Running, Some(200), 1);
        assert_eq!(
            decide(Some(&running), 100).ok(),
            Some(StepDecision::Wait {
                lease_expires_at: 200
            })
        );
    }

    #[test]
    fn running_row_with_expired_lease_is_reclaimed() {
        let running = row(State::Running, Some(100), 3);
        // Expiry is exclusive: a lease that ends now is over.
        assert_eq!(
            decide(Some(&running), 100).ok(),
            Some(StepDecision::Reclaim {
                expected_state: State::Running,
                expected_fence: 3
            })
        );
        let no_lease = row(State::Running, None, 1);
        assert!(matches!(
            decide(Some(&no_lease), 100),
            Ok(StepDecision::Reclaim { .. })
        ));
    }

    #[test]
    fn failed_cancelled_and_pending_rows_are_reclaimed() {
        for state in [State::Failed, State::Cancelled, State::Pending] {
            let stored = row(state.clone(), Some(10_000), 2);
            assert_eq!(
                decide(Some(&stored), 100).ok(),
                Some(StepDecision::Reclaim {
                    expected_state: state,
                    expected_fence: 2
                })
            );
        }
    }

    #[test]
    fn unknown_state_is_an_error_not_a_guess() {
        let stored = row(State::Unknown("paused".into()), None, 1);
        let error = decide(Some(&stored), 100).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("unsupported step state \"paused\" in stored step step_1 (step:sig_x)")
        );
    }

    #[test]
    fn unknown_kind_is_an_error_not_a_guess() {
        let mut stored = row(State::Completed, None, 1);
        stored.kind = StepKind::Unknown("timer".into());
        assert!(matches!(
            decide(Some(&stored), 100),
            Err(Error::Unsupported { what: "kind", .. })
        ));
    }

    #[test]
    fn signature_mismatch_names_the_checkpoint() {
        let stored = row(State::Completed, None, 1);
        let error = decide_step(Some(&stored), &StepKind::Agent, r#"{"other":1}"#, 0);
        match error {
            Err(Error::SignatureMismatch { checkpoint }) => assert_eq!(checkpoint, "step:sig_x"),
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    #[test]
    fn completed_row_without_result_is_corrupt() {
        let mut stored = row(State::Completed, None, 1);
        stored.result = None;
        match decide(Some(&stored), 0) {
            Err(Error::Store(error)) => {
                assert_eq!(error.kind(), crate::StoreErrorKind::Corrupt)
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn workflow_steps_follow_the_same_table() {
        let mut stored = row(State::Running, Some(500), 1);
        stored.kind = StepKind::Workflow;
        assert!(matches!(
            decide_step(Some(&stored), &StepKind::Workflow, SIG, 100),
            Ok(StepDecision::Wait { .. })
        ));
        assert!(matches!(
            decide_step(Some(&stored), &StepKind::Workflow, SIG, 600),
            Ok(StepDecision::Reclaim { .. })
        ));
    }

    #[test]
    fn fencing_adopts_a_completed_winner() {
        let winner = row(State::Completed, None, 2);
        assert_eq!(
            resolve_fence_conflict(Some(&winner)).ok(),
            Some(FenceResolution::Adopt(json!({"output": "done"})))
        );
    }

    #[test]
    fn fencing_reports_lease_lost_otherwise() {
        let stolen = row(State::Running, Some(900), 2);
        assert_eq!(
            resolve_fence_conflict(Some(&stolen)).ok(),
            Some(FenceResolution::LeaseLost)
        );
        assert_eq!(
            resolve_fence_conflict(None).ok(),
            Some(FenceResolution::LeaseLost)
        );
    }
}
