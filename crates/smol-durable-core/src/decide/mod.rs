//! The durable algorithm's decisions (SPEC §4) as plain functions without I/O.
//!
//! The engine reads rows, asks these functions what to do, and asks the store to perform the
//! small atomic operation that follows; a store may call one of them inside its transaction
//! (the attempt rules), but spells out no rule of its own. This is the one place that decides
//! replay / run / wait / reclaim ([`decide_step`], for sleeps too), whether a claim waits for
//! its completion ([`defers_claim`]), how
//! fencing conflicts resolve, whether the budget allows another call, how long leases last,
//! what happens to tasks and attempts ([`admit_attempt`], [`claim_verdict`],
//! [`attempt_end`], [`cancel_request`], [`attempt_retry_at`]), and which wait a signal goes to
//! ([`serving_wait`], [`wake_not_before`]).

mod attempts;
mod budget;
mod leases;
mod sleeps;
mod steps;
mod waits;

pub use attempts::{
    admit_attempt, attempt_end, attempt_retry_at, cancel_request, claim_verdict, claimable,
    counts_against_max_attempts, failure_repeats, may_attempt_again, reason, AttemptEnd,
    ClaimVerdict, Closure, MAX_ATTEMPT_BACKOFF_MS,
};
pub use budget::check_budget;
pub use leases::{
    heartbeat_interval_ms, step_lease_expires_at, RetryOverride, RetryPolicy, MAX_RETRY_WAIT_MS,
};
pub use sleeps::{sleep_wake_at, wake_at};
pub use steps::{decide_step, defers_claim, resolve_fence_conflict, FenceResolution, StepDecision};
pub use waits::{
    due_for_signals, serving_wait, stored_deadline, stored_names, takes_signals, wait_deadline,
    wait_takes, wake_not_before, WaitOutcome,
};

/// Rows for the decision tests (shared with the store-retry tests).
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::store::{State, StepKind, StepRecord};
    use serde_json::json;

    pub(crate) const SIG: &str = r#"{"kind":"agent"}"#;

    pub(crate) fn row(state: State, lease: Option<i64>, fence: u32) -> StepRecord {
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
            fence,
            last_attempt_at: Some(0),
            created_at: 0,
            updated_at: 0,
        }
    }
}
