//! The durable algorithm's decisions (SPEC §4) as plain functions without I/O.
//!
//! The engine reads rows, asks these functions what to do, and asks the store to perform the
//! small atomic operation that follows. Every store therefore behaves the same way: this module
//! is the one place that decides replay / run / wait / reclaim, how fencing conflicts resolve,
//! when a sleep is due, and whether the budget allows another call.

use serde_json::Value;

use crate::store::{
    AttemptOutcome, AttemptStart, CancelRequest, ClaimStep, CompleteStep, FailStep, InsertStep,
    NewStep, State, StepCas, StepKind, StepRecord, TaskRecord,
};
use crate::Error;

/// What to do with an agent or child-workflow step, given the row the store holds (if any).
#[derive(Debug, Clone, PartialEq)]
pub enum StepDecision {
    /// The step completed before: return this stored result, run nothing, bill nothing.
    Replay(Value),
    /// No row: insert one as `running` with `attempts = 1`, then run the call.
    Insert,
    /// Another live worker holds it: wait (without taking an agent slot) until it finishes or
    /// its lease expires at `lease_expires_at`, then decide again.
    Wait {
        /// When the holder's lease runs out.
        lease_expires_at: i64,
    },
    /// Take the step over: compare-and-set from `(expected_state, expected_attempts)` to
    /// `running` with `attempts + 1`, then run the call.
    Reclaim {
        /// State the row must still be in.
        expected_state: State,
        /// Fencing token the row must still carry.
        expected_attempts: u32,
    },
}

/// Decides an agent or child-workflow step (the table of SPEC §4).
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
    match &row.state {
        State::Completed => Ok(StepDecision::Replay(stored_result(row)?)),
        State::Running if lease_is_live(row, now) => Ok(StepDecision::Wait {
            lease_expires_at: row.lease_expires_at.unwrap_or(now),
        }),
        State::Running | State::Failed | State::Cancelled | State::Pending => {
            Ok(StepDecision::Reclaim {
                expected_state: row.state.clone(),
                expected_attempts: row.attempts,
            })
        }
        State::Unknown(value) => Err(unsupported("state", value, row)),
    }
}

/// What to do with a sleep step.
#[derive(Debug, Clone, PartialEq)]
pub enum SleepDecision {
    /// Completed before: resolve at once.
    Done,
    /// No row: insert one as `running` with this `wakeAt` (fixed forever from now on).
    Insert {
        /// `now + duration`.
        wake_at: i64,
    },
    /// Wait until `wake_at`, then complete. With `reclaim`, first take the row over
    /// (compare-and-set as for agent steps); without, someone else's live lease covers it and the
    /// completion only needs the row to still be `running`.
    WaitUntil {
        /// The stored wake time.
        wake_at: i64,
        /// Fencing expectation when the row must be reclaimed first.
        reclaim: Option<(State, u32)>,
    },
}

/// Decides a sleep step. A live lease held by someone else never delays a sleep past its
/// `wakeAt`.
pub fn decide_sleep(
    existing: Option<&StepRecord>,
    signature_json: &str,
    duration_ms: u64,
    now: i64,
) -> Result<SleepDecision, Error> {
    let Some(row) = existing else {
        let duration = i64::try_from(duration_ms).unwrap_or(i64::MAX);
        return Ok(SleepDecision::Insert {
            wake_at: now.saturating_add(duration),
        });
    };
    check_row(row, &StepKind::Sleep, signature_json)?;
    let wake_at = stored_wake_at(row)?;
    match &row.state {
        State::Completed => Ok(SleepDecision::Done),
        State::Running if lease_is_live(row, now) && wake_at > now => {
            Ok(SleepDecision::WaitUntil {
                wake_at,
                reclaim: None,
            })
        }
        State::Running | State::Failed | State::Cancelled | State::Pending => {
            Ok(SleepDecision::WaitUntil {
                wake_at,
                reclaim: Some((row.state.clone(), row.attempts)),
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
            Ok(FenceResolution::Adopt(stored_result(row)?))
        }
        _ => Ok(FenceResolution::LeaseLost),
    }
}

/// Rejects a new agent call when a total is set and nothing remains (SPEC §7).
pub fn check_budget(total: Option<u64>, spent: u64) -> Result<(), Error> {
    match total {
        Some(total) if spent >= total => Err(Error::BudgetExhausted { spent, total }),
        _ => Ok(()),
    }
}

/// When a step lease claimed at `now` expires: the lease ttl plus the whole backoff a retry
/// policy may spend, so retries never outlive the lease.
pub fn step_lease_expires_at(now: i64, lease_ttl_ms: u64, retry: &RetryPolicy) -> i64 {
    let backoff = retry
        .backoff_ms
        .saturating_mul(u64::from(retry.max_attempts.saturating_sub(1)));
    let lease = i64::try_from(lease_ttl_ms.saturating_add(backoff)).unwrap_or(i64::MAX);
    now.saturating_add(lease)
}

/// How often leases are renewed: a third of the ttl, so two renewals may fail before expiry.
pub fn heartbeat_interval_ms(lease_ttl_ms: u64) -> u64 {
    (lease_ttl_ms / 3).max(1)
}

/// Per-call retry inside one claimed step (`retry: {maxAttempts, backoffMs}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, at least 1.
    pub max_attempts: u32,
    /// Wait between tries.
    pub backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_ms: 0,
        }
    }
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
#[derive(Debug, Clone, PartialEq)]
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
    /// What child runs still unfinished become (they cannot outlive the attempt).
    pub unfinished_children: State,
}

/// Why unfinished child runs were closed when their attempt ended.
pub fn abandoned_child_reason() -> Value {
    serde_json::json!({ "message": "the attempt ended before this child workflow finished" })
}

/// Maps how an attempt ended to what is written.
pub fn attempt_end(outcome: &AttemptOutcome) -> AttemptEnd {
    match outcome {
        AttemptOutcome::Completed { result, .. } => AttemptEnd {
            attempt: State::Completed,
            run_and_task: State::Completed,
            payload: Some(result.clone()),
            reason: None,
            not_before: None,
            unfinished_children: State::Failed,
        },
        AttemptOutcome::Failed { reason, retry_at } => AttemptEnd {
            attempt: State::Failed,
            run_and_task: if retry_at.is_some() {
                State::Pending
            } else {
                State::Failed
            },
            payload: None,
            reason: Some(reason.clone()),
            not_before: *retry_at,
            unfinished_children: State::Failed,
        },
        AttemptOutcome::Cancelled { reason } => AttemptEnd {
            attempt: State::Cancelled,
            run_and_task: State::Cancelled,
            payload: None,
            reason: Some(reason.clone()),
            not_before: None,
            unfinished_children: State::Cancelled,
        },
        AttemptOutcome::Released { not_before } => AttemptEnd {
            attempt: State::Cancelled,
            run_and_task: State::Pending,
            payload: None,
            reason: Some(
                serde_json::json!({ "message": "released by its owner before finishing" }),
            ),
            not_before: *not_before,
            unfinished_children: State::Failed,
        },
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
/// [`MAX_ATTEMPT_BACKOFF_MS`]) while attempts remain, or `None` (the task fails for good) once
/// `max_attempts` are used up or the failure would repeat identically on any worker (a script
/// that does not parse or import, a changed step signature, an exhausted budget, a bad
/// configuration).
pub fn attempt_retry_at(
    error: &Error,
    failures: u32,
    max_attempts: u32,
    base_backoff_ms: u64,
    now: i64,
) -> Option<i64> {
    let repeats = match error {
        Error::Script(script) => matches!(
            script.kind(),
            crate::ScriptErrorKind::Syntax
                | crate::ScriptErrorKind::Metadata
                | crate::ScriptErrorKind::Import
                | crate::ScriptErrorKind::Limit
        ),
        // A value the store cannot hold (PostgreSQL's JSONB refuses U+0000) stays unstorable.
        Error::Store(store) => store.kind() == crate::StoreErrorKind::Unsupported,
        Error::BudgetExhausted { .. }
        | Error::SignatureMismatch { .. }
        | Error::Unsupported { .. }
        | Error::Config(_)
        | Error::Cancelled
        | Error::Released
        | Error::Parked { .. } => true,
        _ => false,
    };
    if repeats || !may_attempt_again(failures, max_attempts) {
        return None;
    }
    let doublings = failures.saturating_sub(1).min(32);
    let backoff = base_backoff_ms
        .saturating_mul(1u64 << doublings)
        .min(MAX_ATTEMPT_BACKOFF_MS);
    Some(now.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)))
}

/// The length in bytes of `value`'s JSON text, counted without building the text
/// (`usize::MAX` if it cannot be serialized).
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

/// Why `value` may not be stored as `what` (e.g. "the agent result") when its JSON text is
/// longer than `max_bytes`, the setting named `limit`; `None` when it fits.
pub fn oversized(what: &str, value: &Value, max_bytes: usize, limit: &str) -> Option<String> {
    let bytes = json_len(value);
    (bytes > max_bytes).then(|| {
        format!(
            "{what} is {bytes} bytes of JSON, more than the {max_bytes}-byte limit \
             ({limit}); store large data elsewhere and return a reference"
        )
    })
}

/// How the engine retries a store operation that failed with a retryable error
/// ([`StoreError::is_retryable`](crate::StoreError::is_retryable): connection lost, database
/// locked or overloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRetryPolicy {
    /// Tries after the first one before the error is surfaced (default 8).
    pub max_retries: u32,
    /// Wait before the first retry; each further wait doubles (default 10 ms).
    pub first_backoff: std::time::Duration,
    /// Longest single wait (default 1 s).
    pub max_backoff: std::time::Duration,
    /// No retry starts once this long has passed since the first try (default 10 s): each try
    /// may itself wait (a busy SQLite file, a pool with no free connection), and an operation
    /// must give up well inside a lease (default 60 s).
    pub max_elapsed: std::time::Duration,
}

impl Default for StoreRetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            first_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_secs(1),
            max_elapsed: std::time::Duration::from_secs(10),
        }
    }
}

impl StoreRetryPolicy {
    /// No retries: every store error reaches the caller at once.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// How long to wait before retrying an operation that has failed `failures` times (counting the
/// failure just seen) with a retryable error, `elapsed` after its first try began; `None` when
/// the policy's retries or time are used up.
pub fn store_retry_delay(
    policy: &StoreRetryPolicy,
    failures: u32,
    elapsed: std::time::Duration,
) -> Option<std::time::Duration> {
    if failures == 0 || failures > policy.max_retries {
        return None;
    }
    let doublings = (failures - 1).min(31);
    let delay = policy
        .first_backoff
        .saturating_mul(1u32 << doublings)
        .min(policy.max_backoff);
    (elapsed.saturating_add(delay) < policy.max_elapsed).then_some(delay)
}

// A write whose first try failed with a retryable error may have committed anyway (the
// connection dropped after the commit, a timeout fired late). Its retry then finds its own
// write and reports it as someone else's; the functions below recognise that case from what only
// the first try could have written (a fresh id, our owner with our exact lease) and turn it back
// into the success it was. They are only applied after such a failure.

/// A retried `insert_step` that finds a row with our fresh step id inserted it.
pub fn settle_retried_insert(step: &NewStep, outcome: InsertStep) -> InsertStep {
    match outcome {
        InsertStep::Existing(row) if row.step_id == step.step_id => InsertStep::Inserted(row),
        other => other,
    }
}

/// A retried `claim_step` that finds the row running under our owner, with the fence one above
/// the expected one and exactly our lease, claimed it (a heartbeat never renews a step its
/// owner does not know it holds, so the lease is still the one we wrote).
pub fn settle_retried_claim(claim: &ClaimStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == State::Running
                && row.attempts == claim.expected_attempts.saturating_add(1)
                && row.worker_id.as_deref() == Some(claim.worker_id.as_str())
                && row.lease_expires_at == Some(claim.lease_expires_at) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A retried `complete_step` that finds the row completed under our fence with our result
/// completed it (so the caller does not report our own result as adopted).
pub fn settle_retried_completion(complete: &CompleteStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == State::Completed
                && complete.fence.is_none_or(|fence| row.attempts == fence)
                && row.result.as_ref() == Some(&complete.result) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

/// A retried `fail_step` that finds the row in the state we asked for under our fence wrote it.
pub fn settle_retried_failure(fail: &FailStep, outcome: StepCas) -> StepCas {
    match outcome {
        StepCas::Conflict(Some(row))
            if row.state == fail.state
                && row.attempts == fail.fence
                && row.failure_reason.as_ref() == Some(&fail.reason) =>
        {
            StepCas::Applied(row)
        }
        other => other,
    }
}

fn lease_is_live(row: &StepRecord, now: i64) -> bool {
    row.lease_expires_at.is_some_and(|lease| lease > now)
}

fn check_row(row: &StepRecord, kind: &StepKind, signature_json: &str) -> Result<(), Error> {
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

fn stored_result(row: &StepRecord) -> Result<Value, Error> {
    row.result.clone().ok_or_else(|| {
        Error::Store(crate::StoreError::new(
            crate::StoreErrorKind::Corrupt,
            "decide_step",
            format!(
                "completed step {} ({}) has no result_json",
                row.step_id, row.checkpoint_name
            ),
        ))
    })
}

fn stored_wake_at(row: &StepRecord) -> Result<i64, Error> {
    row.input
        .get("wakeAt")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            Error::Store(crate::StoreError::new(
                crate::StoreErrorKind::Corrupt,
                "decide_sleep",
                format!(
                    "sleep step {} ({}) has no integer wakeAt in input_json",
                    row.step_id, row.checkpoint_name
                ),
            ))
        })
}

fn unsupported(what: &'static str, value: &str, row: &StepRecord) -> Error {
    Error::Unsupported {
        what,
        column: if what == "kind" { "step_kind" } else { "state" },
        value: value.to_owned(),
        step_id: row.step_id.clone(),
        checkpoint: row.checkpoint_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SIG: &str = r#"{"kind":"agent"}"#;

    fn row(state: State, lease: Option<i64>, attempts: u32) -> StepRecord {
        StepRecord {
            step_id: "step_1".into(),
            run_id: "run_1".into(),
            root_run_id: "run_1".into(),
            kind: StepKind::Agent,
            checkpoint_name: "step:sig_x".into(),
            input_signature_hash: "x".into(),
            input_signature_json: SIG.into(),
            state: state.clone(),
            input: json!({"durationMs": 10, "wakeAt": 500}),
            result: (state == State::Completed).then(|| json!({"output": "done"})),
            failure_reason: None,
            worker_id: Some("owner_a".into()),
            lease_expires_at: lease,
            attempts,
            last_attempt_at: Some(0),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn decide(existing: Option<&StepRecord>, now: i64) -> Result<StepDecision, Error> {
        decide_step(existing, &StepKind::Agent, SIG, now)
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
                expected_attempts: 3
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
                    expected_attempts: 2
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
            Some(
                "unsupported step state \"paused\": sw_workflow_steps row step_1 (step:sig_x), column state"
            )
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

    fn sleep_row(state: State, lease: Option<i64>) -> StepRecord {
        let mut stored = row(state, lease, 1);
        stored.kind = StepKind::Sleep;
        stored
    }

    #[test]
    fn sleep_without_row_fixes_wake_at_from_now() {
        assert_eq!(
            decide_sleep(None, SIG, 250, 1_000).ok(),
            Some(SleepDecision::Insert { wake_at: 1_250 })
        );
    }

    #[test]
    fn sleep_reuses_the_stored_wake_at() {
        // Stored wakeAt is 500 whatever the duration and now say.
        let running = sleep_row(State::Running, Some(10_000));
        assert_eq!(
            decide_sleep(Some(&running), SIG, 10, 100).ok(),
            Some(SleepDecision::WaitUntil {
                wake_at: 500,
                reclaim: None
            })
        );
        let expired = sleep_row(State::Running, Some(50));
        assert_eq!(
            decide_sleep(Some(&expired), SIG, 10, 100).ok(),
            Some(SleepDecision::WaitUntil {
                wake_at: 500,
                reclaim: Some((State::Running, 1))
            })
        );
    }

    #[test]
    fn a_due_sleep_never_waits_for_another_lease() {
        let held = sleep_row(State::Running, Some(10_000));
        assert_eq!(
            decide_sleep(Some(&held), SIG, 10, 600).ok(),
            Some(SleepDecision::WaitUntil {
                wake_at: 500,
                reclaim: Some((State::Running, 1))
            })
        );
    }

    #[test]
    fn completed_sleep_is_done_and_corrupt_sleep_is_an_error() {
        let done = sleep_row(State::Completed, None);
        assert_eq!(
            decide_sleep(Some(&done), SIG, 10, 0).ok(),
            Some(SleepDecision::Done)
        );
        let mut broken = sleep_row(State::Running, None);
        broken.input = json!({"durationMs": 10});
        assert!(decide_sleep(Some(&broken), SIG, 10, 0).is_err());
    }

    #[test]
    fn budget_rejects_only_when_a_total_is_spent() {
        assert!(check_budget(None, 1_000_000).is_ok());
        assert!(check_budget(Some(10), 9).is_ok());
        assert_eq!(
            check_budget(Some(10), 10).err().map(|e| e.to_string()),
            Some("budget exhausted: spent 10 of 10 output tokens".to_owned())
        );
    }

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
        let completed = attempt_end(&AttemptOutcome::Completed {
            result: json!(1),
            budget_spent: 0,
        });
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
    fn retry_backoff_extends_the_step_lease() {
        let none = RetryPolicy::default();
        let long = RetryPolicy {
            max_attempts: 3,
            backoff_ms: 120_000,
        };
        assert_eq!(step_lease_expires_at(1_000, 60_000, &none), 61_000);
        assert_eq!(step_lease_expires_at(1_000, 60_000, &long), 301_000);
        assert_eq!(heartbeat_interval_ms(60_000), 20_000);
    }

    #[test]
    fn failed_runner_attempts_back_off_until_max_attempts() {
        let flaky = Error::Workflow("provider down".into());
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
    fn results_larger_than_the_limit_are_refused_by_their_json_size() {
        let limit = "Limits::max_result_bytes";
        assert_eq!(oversized("the result", &json!("abc"), 5, limit), None);
        let message = oversized("the result", &json!("abcd"), 5, limit).unwrap_or_default();
        assert!(
            message.starts_with("the result is 6 bytes of JSON"),
            "{message}"
        );
        assert!(message.contains("(Limits::max_result_bytes)"), "{message}");
        let nested = json!({ "a": [1, "é\"", null], "b": { "c": 2.5 } });
        assert_eq!(json_len(&nested), nested.to_string().len());
    }

    #[test]
    fn store_retries_back_off_doubling_up_to_a_cap_then_give_up() {
        let ms = std::time::Duration::from_millis;
        let policy = StoreRetryPolicy {
            max_retries: 5,
            first_backoff: ms(10),
            max_backoff: ms(50),
            max_elapsed: ms(1_000),
        };
        let waits: Vec<_> = (0..=6)
            .map(|failures| store_retry_delay(&policy, failures, ms(0)).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            waits,
            [None, Some(10), Some(20), Some(40), Some(50), Some(50), None]
        );
        assert_eq!(store_retry_delay(&StoreRetryPolicy::none(), 1, ms(0)), None);
        // Tries that took long themselves use up the time: no retry would end inside it.
        assert_eq!(store_retry_delay(&policy, 1, ms(985)), Some(ms(10)));
        assert_eq!(store_retry_delay(&policy, 1, ms(995)), None);
    }

    fn claim_of(row: &StepRecord) -> ClaimStep {
        ClaimStep {
            step_id: row.step_id.clone(),
            expected_state: State::Failed,
            expected_attempts: 1,
            worker_id: "owner_a".into(),
            lease_expires_at: 900,
            now: 0,
        }
    }

    #[test]
    fn a_retried_write_that_finds_its_own_first_try_reports_success() {
        // Our insert committed before the connection dropped: same fresh step id.
        let ours = row(State::Running, Some(900), 1);
        let step = NewStep {
            step_id: ours.step_id.clone(),
            run_id: ours.run_id.clone(),
            root_run_id: ours.root_run_id.clone(),
            kind: StepKind::Agent,
            checkpoint_name: ours.checkpoint_name.clone(),
            input_signature_hash: "x".into(),
            input_signature_json: SIG.into(),
            input: json!({}),
            worker_id: "owner_a".into(),
            lease_expires_at: 900,
            now: 0,
        };
        let settled = settle_retried_insert(&step, InsertStep::Existing(ours.clone()));
        assert_eq!(settled, InsertStep::Inserted(ours.clone()));
        let mut someone_elses = ours.clone();
        someone_elses.step_id = "step_other".into();
        let kept = settle_retried_insert(&step, InsertStep::Existing(someone_elses.clone()));
        assert_eq!(kept, InsertStep::Existing(someone_elses));

        // Our claim committed: fence + 1, our owner, our exact lease.
        let claimed = row(State::Running, Some(900), 2);
        let claim = claim_of(&claimed);
        let settled = settle_retried_claim(&claim, StepCas::Conflict(Some(claimed.clone())));
        assert_eq!(settled, StepCas::Applied(claimed.clone()));
        for other in [
            row(State::Running, Some(901), 2), // another lease: another claim of ours
            row(State::Running, Some(900), 3), // claimed again since
            row(State::Completed, Some(900), 2), // finished since
        ] {
            let conflict = StepCas::Conflict(Some(other));
            assert_eq!(settle_retried_claim(&claim, conflict.clone()), conflict);
        }
        let mut stranger = claimed.clone();
        stranger.worker_id = Some("owner_b".into());
        let conflict = StepCas::Conflict(Some(stranger));
        assert_eq!(settle_retried_claim(&claim, conflict.clone()), conflict);

        // Our completion committed: completed under our fence with our result.
        let done = row(State::Completed, None, 2);
        let mut complete = CompleteStep {
            step_id: done.step_id.clone(),
            fence: Some(2),
            result: json!({"output": "done"}),
            ledger: Vec::new(),
            now: 0,
        };
        let settled = settle_retried_completion(&complete, StepCas::Conflict(Some(done.clone())));
        assert_eq!(settled, StepCas::Applied(done.clone()));
        complete.result = json!({"output": "mine"});
        let conflict = StepCas::Conflict(Some(done.clone()));
        assert_eq!(
            settle_retried_completion(&complete, conflict.clone()),
            conflict
        );

        // Our failure committed: the state and reason we asked for under our fence.
        let mut failed = row(State::Failed, None, 2);
        failed.failure_reason = Some(json!({"message": "boom"}));
        let fail = FailStep {
            step_id: failed.step_id.clone(),
            fence: 2,
            state: State::Failed,
            reason: json!({"message": "boom"}),
            ledger: Vec::new(),
            now: 0,
        };
        let settled = settle_retried_failure(&fail, StepCas::Conflict(Some(failed.clone())));
        assert_eq!(settled, StepCas::Applied(failed.clone()));
        let fail_later = FailStep { fence: 3, ..fail };
        let conflict = StepCas::Conflict(Some(failed));
        assert_eq!(
            settle_retried_failure(&fail_later, conflict.clone()),
            conflict
        );
    }
}
