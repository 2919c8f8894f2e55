//! Tasks and attempts: who may open an attempt, whether a claimed task runs or is closed, what
//! an attempt's end writes, what a cancellation does, and when a failed runner task runs again.
//!
//! Stores call [`admit_attempt`], [`claim_verdict`] and [`cancel_request`] inside the
//! transaction that read the task; the engine turns an [`AttemptOutcome`] into the
//! [`AttemptEnd`] a store writes ([`attempt_end`]). Every reason text a store writes is one of
//! the [`Closure`]s below, so all stores write the same words.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{AttemptOutcome, AttemptStart, CancelRequest, State, TaskRecord};
use crate::Error;

/// A state and the reason written with it, for something closed without finishing on its own:
/// an attempt whose owner is gone, a task nobody will run again, a child run its attempt
/// outlived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closure {
    /// The state written.
    pub state: State,
    /// The reason written (`{"message": …}`).
    pub reason: Value,
}

impl Closure {
    fn new(state: State, message: impl Into<String>) -> Self {
        Self {
            state,
            reason: reason(message),
        }
    }

    /// A running attempt found by a new attempt of its task: its owner lost the task.
    pub fn abandoned_attempt() -> Self {
        Self::new(State::Failed, "attempt abandoned: its owner lost the task")
    }

    /// A run or task cancelled (`workflow cancelled`, the text of [`Error::Cancelled`], and
    /// its kind).
    pub fn cancelled() -> Self {
        Self {
            state: State::Cancelled,
            reason: Error::Cancelled.failure_reason(),
        }
    }

    /// A runner task that used up its `max_attempts`.
    pub fn out_of_attempts(counted: u32) -> Self {
        Self::new(State::Failed, format!("gave up after {counted} attempts"))
    }

    /// A step still held when its attempt ended (not cancelled): the next attempt reclaims it.
    pub fn abandoned_step() -> Self {
        Self::new(State::Failed, "the attempt ended before this step finished")
    }

    /// An unfinished child run whose run was handed back (a worker shutting down, a run parked
    /// on sleeps or waits): `pending` like its root, so it still takes signals and its waits
    /// stay open; the next attempt continues it.
    pub fn released_child() -> Self {
        Self::new(
            State::Pending,
            "handed back with its run before finishing; it continues when the run does",
        )
    }

    /// An unfinished child run whose attempt ended: it cannot outlive the attempt (`cancelled`
    /// when the attempt was cancelled, else `failed`).
    pub fn abandoned_child(state: State) -> Self {
        Self::new(
            state,
            "the attempt ended before this child workflow finished",
        )
    }
}

/// The stored form of a failure reason: `{"message": …}`.
pub fn reason(message: impl Into<String>) -> Value {
    serde_json::json!({ "message": message.into() })
}

/// Whether an owner may open an attempt on `task` now. `None`: go ahead (claim the task);
/// `Some(outcome)`: report that instead and change nothing. Stores call this inside the
/// transaction that reads the task, so the check and the claim are one atomic step.
pub fn admit_attempt(
    task: &TaskRecord,
    owner_id: &str,
    take_over_from: Option<&str>,
    revive: bool,
    now: i64,
) -> Option<AttemptStart> {
    let revivable = revive && matches!(task.state, State::Failed | State::Cancelled);
    if task.state.is_terminal() && !revivable {
        return Some(AttemptStart::Finished(task.state.clone()));
    }
    if task.state != State::Running {
        return None;
    }
    let (Some(holder), Some(lease)) = (&task.claimed_by_owner_id, task.lease_expires_at) else {
        return None;
    };
    let may_take_over = holder == owner_id || take_over_from == Some(holder.as_str());
    (lease > now && !may_take_over).then(|| AttemptStart::Busy {
        owner_id: holder.clone(),
        lease_expires_at: lease,
    })
}

/// The states and payloads an attempt's end writes to the attempt, its run and its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptEnd {
    /// New attempt state.
    pub attempt: State,
    /// New state of the run and of the task.
    pub run_and_task: State,
    /// Result stored on run and task.
    pub payload: Option<Value>,
    /// Failure reason stored on attempt, run and task.
    pub reason: Option<Value>,
    /// Not-before time of the task (retry backoff).
    pub not_before: Option<i64>,
    /// What child runs still unfinished become.
    pub unfinished_children: Closure,
    /// Who may claim the task from now on (`None`: as before). A local run that detaches at a
    /// wait is handed to workers.
    pub claim_scope: Option<crate::store::ClaimScope>,
}

/// Maps how an attempt ended to what is written.
pub fn attempt_end(outcome: &AttemptOutcome) -> AttemptEnd {
    let failed = |state: State, reason: &Value, not_before: Option<i64>| AttemptEnd {
        attempt: state.clone(),
        run_and_task: state.clone(),
        payload: None,
        reason: Some(reason.clone()),
        not_before,
        unfinished_children: Closure::abandoned_child(state),
        claim_scope: None,
    };
    match outcome {
        AttemptOutcome::Completed { result } => AttemptEnd {
            attempt: State::Completed,
            run_and_task: State::Completed,
            payload: Some(result.clone()),
            reason: None,
            not_before: None,
            unfinished_children: Closure::abandoned_child(State::Failed),
            claim_scope: None,
        },
        AttemptOutcome::Failed {
            reason,
            retry_at: Some(retry_at),
        } => AttemptEnd {
            run_and_task: State::Pending,
            ..failed(State::Failed, reason, Some(*retry_at))
        },
        AttemptOutcome::Failed {
            reason,
            retry_at: None,
        } => failed(State::Failed, reason, None),
        AttemptOutcome::Cancelled { reason } => failed(State::Cancelled, reason, None),
        // Handed back: the attempt ends `cancelled`, so it does not count against
        // `max_attempts` ([`counts_against_max_attempts`]); its children wait with it.
        AttemptOutcome::Released { not_before } => AttemptEnd {
            run_and_task: State::Pending,
            unfinished_children: Closure::released_child(),
            ..failed(
                State::Cancelled,
                &reason("released by its owner before finishing"),
                *not_before,
            )
        },
        // Detached at a wait: handed back like a parked run, and to workers.
        AttemptOutcome::Detached { not_before } => AttemptEnd {
            claim_scope: Some(crate::store::ClaimScope::Runner),
            ..attempt_end(&AttemptOutcome::Released {
                not_before: Some(*not_before),
            })
        },
    }
}

/// Whether a claim of the next task may take `task`: `pending` and due (`not_before` passed),
/// or `running` under a lease that has run out (its owner is gone). What happens to it then is
/// [`claim_verdict`]'s to say.
pub fn claimable(task: &TaskRecord, now: i64) -> bool {
    match task.state {
        State::Pending => task.not_before.is_none_or(|at| at <= now),
        State::Running => task.lease_expires_at.is_none_or(|at| at <= now),
        _ => false,
    }
}

/// What becomes of a task a claim found eligible (pending and due, or running under an expired
/// lease).
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimVerdict {
    /// Open an attempt on it.
    Open,
    /// Run it no more: close the task, its running attempts and its unfinished runs like this.
    Close(Closure),
}

/// Whether a task a claim found eligible opens an attempt: not when a cancellation was
/// requested while nobody ran it (it is cancelled), nor when its `counted` attempts (see
/// [`counts_against_max_attempts`]) used up `max_attempts` (it fails).
pub fn claim_verdict(cancel_requested: bool, counted: u32, max_attempts: u32) -> ClaimVerdict {
    if cancel_requested {
        ClaimVerdict::Close(Closure::cancelled())
    } else if !may_attempt_again(counted, max_attempts) {
        ClaimVerdict::Close(Closure::out_of_attempts(counted))
    } else {
        ClaimVerdict::Open
    }
}

/// What a cancellation request does to a task: nothing once it finished; cancel at once while
/// nobody executes it (pending, or running under a lease that has expired: its owner is gone and
/// would never notice); otherwise record the request for the executing owner's next heartbeat.
pub fn cancel_request(task: &TaskRecord, now: i64) -> CancelRequest {
    match &task.state {
        state if state.is_terminal() => CancelRequest::AlreadyFinished(state.clone()),
        State::Pending => CancelRequest::CancelledPending,
        State::Running if task.lease_expires_at.is_none_or(|lease| lease <= now) => {
            CancelRequest::CancelledPending
        }
        _ => CancelRequest::Requested,
    }
}

/// Whether a runner task that has had `attempts` attempts that count (see
/// [`counts_against_max_attempts`]) may get another one.
pub fn may_attempt_again(attempts: u32, max_attempts: u32) -> bool {
    attempts < max_attempts.max(1)
}

/// Whether an attempt in this state uses up one of the task's `max_attempts`: failed ones, and
/// running ones (a claim finds them abandoned by a dead owner and fails them). An attempt its
/// owner handed back (shutdown, parking) ended `cancelled` and costs nothing.
pub fn counts_against_max_attempts(attempt_state: &State) -> bool {
    matches!(attempt_state, State::Failed | State::Running)
}

/// Longest wait between two attempts of a runner task.
pub const MAX_ATTEMPT_BACKOFF_MS: u64 = 5 * 60 * 1000;

/// When a runner task whose attempt just failed with `error` may run again, `failures` being
/// its failed attempts counting this one: after `base_backoff_ms · 2^(failures-1)` (capped at
/// [`MAX_ATTEMPT_BACKOFF_MS`]), or later when a rate-limited provider asked to wait longer,
/// while attempts remain; `None` (the task fails for good) once `max_attempts` are used up or
/// the failure [repeats](failure_repeats).
pub fn attempt_retry_at(
    error: &Error,
    failures: u32,
    max_attempts: u32,
    base_backoff_ms: u64,
    now: i64,
) -> Option<i64> {
    if failure_repeats(error) || !may_attempt_again(failures, max_attempts) {
        return None;
    }
    let doublings = failures.saturating_sub(1).min(32);
    let backoff = base_backoff_ms
        .saturating_mul(1u64 << doublings)
        .max(retry_after_ms(error).unwrap_or(0))
        .min(MAX_ATTEMPT_BACKOFF_MS);
    Some(now.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)))
}

/// Whether a run that failed with `error` would fail the same way on any worker, so running
/// it again would only pay again: a script that does not parse or import or hits a limit, a
/// changed step signature, an exhausted budget, a provider that refused the call (terminal or
/// unusable answer), an agent whose answers missed their schema twice, a bad configuration, a
/// child run that failed for one of these. Retried: a script that threw (a failed step runs
/// again), a transient or rate-limited provider whose per-call tries ran out, a store that was
/// unavailable, a worker without the run's provider.
pub fn failure_repeats(error: &Error) -> bool {
    match error {
        Error::Script(script) => matches!(
            script.kind(),
            crate::ScriptErrorKind::Syntax
                | crate::ScriptErrorKind::Metadata
                | crate::ScriptErrorKind::Import
                | crate::ScriptErrorKind::Limit
        ),
        Error::Provider(provider) => !provider.is_retryable(),
        // A value the store cannot hold (PostgreSQL's JSONB refuses U+0000) stays unstorable.
        Error::Store(store) => store.kind() == crate::StoreErrorKind::Unsupported,
        Error::Workflow {
            cause: Some(cause), ..
        } => failure_repeats(cause),
        Error::BudgetExhausted { .. }
        | Error::SchemaMismatch { .. }
        | Error::SignatureMismatch { .. }
        | Error::Unsupported { .. }
        | Error::InvalidRequest(_)
        | Error::InvalidState { .. }
        | Error::Internal { .. }
        | Error::Cancelled
        | Error::Released
        | Error::Parked { .. }
        | Error::Detached { .. } => true,
        _ => false,
    }
}

/// The wait a rate-limited provider asked for, found through failed child runs too.
fn retry_after_ms(error: &Error) -> Option<u64> {
    match error {
        Error::Provider(provider) => provider.retry_after_ms(),
        Error::Workflow {
            cause: Some(cause), ..
        } => retry_after_ms(cause),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(state: State, holder: Option<&str>, lease: Option<i64>) -> TaskRecord {
        TaskRecord {
            task_id: "task_1".into(),
            task_name: "workflow.run".into(),
            state,
            claim_scope: crate::store::ClaimScope::Local,
            params: json!({}),
            submitted_by_owner_id: Some("owner_a".into()),
            claimed_by_owner_id: holder.map(str::to_owned),
            lease_expires_at: lease,
            max_attempts: 1,
            idempotency_key: None,
            not_before: None,
            completed_payload: None,
            failure_reason: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn attempts_are_admitted_by_state_lease_and_takeover() {
        let running = task(State::Running, Some("owner_a"), Some(100));
        assert_eq!(
            admit_attempt(&running, "owner_b", None, true, 50),
            Some(AttemptStart::Busy {
                owner_id: "owner_a".into(),
                lease_expires_at: 100
            })
        );
        assert_eq!(
            admit_attempt(&running, "owner_b", None, true, 100),
            None,
            "expired lease"
        );
        assert_eq!(
            admit_attempt(&running, "owner_b", Some("owner_a"), true, 50),
            None,
            "takeover"
        );
        assert_eq!(
            admit_attempt(&running, "owner_a", None, true, 50),
            None,
            "own task"
        );
        let done = task(State::Completed, None, None);
        assert_eq!(
            admit_attempt(&done, "owner_b", None, true, 0),
            Some(AttemptStart::Finished(State::Completed))
        );
        let failed = task(State::Failed, None, None);
        assert_eq!(
            admit_attempt(&failed, "owner_b", None, true, 0),
            None,
            "resume revives"
        );
        assert_eq!(
            admit_attempt(&failed, "owner_b", None, false, 0),
            Some(AttemptStart::Finished(State::Failed))
        );
        assert_eq!(
            admit_attempt(&task(State::Pending, None, None), "owner_b", None, false, 0),
            None
        );
    }

    #[test]
    fn attempt_ends_map_to_states() {
        let completed = attempt_end(&AttemptOutcome::Completed { result: json!(1) });
        assert_eq!(
            (completed.attempt, completed.run_and_task),
            (State::Completed, State::Completed)
        );
        assert_eq!(completed.payload, Some(json!(1)));
        let retry = attempt_end(&AttemptOutcome::Failed {
            reason: json!({}),
            retry_at: Some(9),
        });
        assert_eq!(
            (retry.attempt, retry.run_and_task, retry.not_before),
            (State::Failed, State::Pending, Some(9))
        );
        let failed = attempt_end(&AttemptOutcome::Failed {
            reason: json!({}),
            retry_at: None,
        });
        assert_eq!(failed.run_and_task, State::Failed);
        let cancelled = attempt_end(&AttemptOutcome::Cancelled { reason: json!({}) });
        assert_eq!(
            (cancelled.attempt, cancelled.run_and_task),
            (State::Cancelled, State::Cancelled)
        );
        assert_eq!(cancelled.unfinished_children.state, State::Cancelled);
        assert_eq!(failed.unfinished_children.state, State::Failed);
        let released = attempt_end(&AttemptOutcome::Released { not_before: None });
        assert_eq!(
            (released.attempt, released.run_and_task, released.not_before),
            (State::Cancelled, State::Pending, None)
        );
        let parked = attempt_end(&AttemptOutcome::Released {
            not_before: Some(60_000),
        });
        assert_eq!(parked.not_before, Some(60_000));
        assert!(!counts_against_max_attempts(&parked.attempt));
        assert_eq!(
            parked.unfinished_children.state,
            State::Pending,
            "children wait with their run"
        );
    }

    #[test]
    fn a_claimed_task_opens_an_attempt_unless_cancelled_or_out_of_attempts() {
        assert_eq!(claim_verdict(false, 0, 3), ClaimVerdict::Open);
        assert_eq!(claim_verdict(false, 2, 3), ClaimVerdict::Open);
        assert_eq!(
            claim_verdict(false, 0, 0),
            ClaimVerdict::Open,
            "zero means one"
        );
        assert_eq!(
            claim_verdict(false, 3, 3),
            ClaimVerdict::Close(Closure::out_of_attempts(3))
        );
        assert_eq!(
            claim_verdict(true, 0, 3),
            ClaimVerdict::Close(Closure::cancelled())
        );
        assert_eq!(
            Closure::out_of_attempts(3).reason,
            json!({"message": "gave up after 3 attempts"})
        );
        assert_eq!(
            Closure::cancelled().reason,
            json!({"message": "workflow cancelled", "kind": "cancelled"})
        );
    }

    #[test]
    fn cancellation_depends_on_the_task_state_and_lease() {
        let pending = task(State::Pending, None, None);
        assert_eq!(cancel_request(&pending, 5), CancelRequest::CancelledPending);
        let running = task(State::Running, Some("owner_a"), Some(100));
        assert_eq!(cancel_request(&running, 50), CancelRequest::Requested);
        assert_eq!(
            cancel_request(&running, 100),
            CancelRequest::CancelledPending,
            "an owner whose lease expired will never notice"
        );
        let failed = task(State::Failed, None, None);
        assert_eq!(
            cancel_request(&failed, 0),
            CancelRequest::AlreadyFinished(State::Failed)
        );
    }

    #[test]
    fn runner_tasks_get_at_most_max_attempts() {
        assert!(may_attempt_again(0, 3));
        assert!(may_attempt_again(2, 3));
        assert!(!may_attempt_again(3, 3));
        assert!(!may_attempt_again(1, 0), "zero means one attempt");
    }

    #[test]
    fn failed_runner_attempts_back_off_until_max_attempts() {
        let flaky = Error::workflow("provider down");
        assert_eq!(attempt_retry_at(&flaky, 1, 3, 1_000, 10_000), Some(11_000));
        assert_eq!(attempt_retry_at(&flaky, 2, 3, 1_000, 10_000), Some(12_000));
        assert_eq!(attempt_retry_at(&flaky, 3, 3, 1_000, 10_000), None);
        assert_eq!(
            attempt_retry_at(&flaky, 30, 40, 1_000, 0),
            Some(MAX_ATTEMPT_BACKOFF_MS as i64),
            "backoff is capped"
        );
    }

    #[test]
    fn failures_that_would_repeat_are_not_retried() {
        let syntax = Error::Script(crate::ScriptError::new(
            crate::ScriptErrorKind::Syntax,
            "unexpected token",
        ));
        let thrown = Error::Script(crate::ScriptError::new(
            crate::ScriptErrorKind::Thrown,
            "boom",
        ));
        let budget = Error::BudgetExhausted { spent: 5, total: 5 };
        assert_eq!(attempt_retry_at(&syntax, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&budget, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&Error::Cancelled, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&thrown, 1, 3, 1_000, 0), Some(1_000));
        let unstorable = Error::Store(crate::StoreError::new(
            crate::StoreErrorKind::Unsupported,
            "complete_step",
            "U+0000",
        ));
        let unavailable = Error::Store(crate::StoreError::new(
            crate::StoreErrorKind::Unavailable,
            "complete_step",
            "connection lost",
        ));
        assert_eq!(attempt_retry_at(&unstorable, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&unavailable, 1, 3, 1_000, 0), Some(1_000));
    }

    #[test]
    fn provider_failures_are_retried_only_when_trying_again_can_help() {
        let terminal = Error::Provider(crate::ProviderError::terminal("400 bad request"));
        let unusable = Error::Provider(crate::ProviderError::new(
            crate::ProviderErrorKind::InvalidResponse,
            "not JSON",
        ));
        let transient = Error::Provider(crate::ProviderError::transient("503"));
        let schema = Error::SchemaMismatch {
            message: "Structured output did not match JSON Schema: /a missing".into(),
        };
        assert_eq!(attempt_retry_at(&terminal, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&unusable, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&schema, 1, 3, 1_000, 0), None);
        assert_eq!(attempt_retry_at(&transient, 1, 3, 1_000, 0), Some(1_000));
        let child = |cause: Error| Error::Workflow {
            message: "child workflow ./c.mjs failed".into(),
            cause: Some(Box::new(cause)),
        };
        assert_eq!(attempt_retry_at(&child(terminal), 1, 3, 1_000, 0), None);
        assert_eq!(
            attempt_retry_at(&child(transient), 1, 3, 1_000, 0),
            Some(1_000)
        );
    }

    #[test]
    fn a_rate_limit_hint_longer_than_the_backoff_wins_up_to_the_cap() {
        let limited = |after: u64| {
            Error::Provider(crate::ProviderError::new(
                crate::ProviderErrorKind::RateLimited {
                    retry_after_ms: Some(after),
                },
                "429",
            ))
        };
        assert_eq!(
            attempt_retry_at(&limited(30_000), 1, 3, 1_000, 0),
            Some(30_000)
        );
        assert_eq!(attempt_retry_at(&limited(10), 1, 3, 1_000, 0), Some(1_000));
        assert_eq!(
            attempt_retry_at(&limited(u64::MAX), 1, 3, 1_000, 0),
            Some(MAX_ATTEMPT_BACKOFF_MS as i64)
        );
    }
}
