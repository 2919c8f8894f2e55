//! One round of the claim protocol and the fenced completion, shared by every step kind.
//!
//! These functions are the glue between [`decide`](crate::decide) and the store: read the row,
//! decide, perform the one atomic operation the decision calls for, and decide again when that
//! operation reports that someone else got there first. The conformance suite drives stores
//! through exactly these functions.

use serde_json::Value;

use crate::decide::{decide_step, resolve_fence_conflict, FenceResolution, StepDecision};
use crate::store::{
    ClaimStep, CompleteStep, DurableStore, InsertStep, LedgerEntry, NewStep, RecordStep, StepCas,
    StepKind, StepRecord,
};
use crate::{Error, StepSignature};

/// An agent or child-workflow step someone wants to run.
#[derive(Debug, Clone)]
pub struct StepClaim<'a> {
    /// Run.
    pub run_id: &'a str,
    /// Root run.
    pub root_run_id: &'a str,
    /// Kind.
    pub kind: StepKind,
    /// Checkpoint name (with occurrence suffix).
    pub checkpoint_name: &'a str,
    /// Signature.
    pub signature: &'a StepSignature,
    /// Input document for a new row.
    pub input: Value,
    /// Claiming owner.
    pub worker_id: &'a str,
    /// Lease for the claim.
    pub lease_expires_at: i64,
}

impl StepClaim<'_> {
    /// The row this claim inserts when the step has none, under a fresh step id.
    pub fn new_step(&self, now: i64) -> NewStep {
        NewStep {
            step_id: crate::new_id("step"),
            run_id: self.run_id.to_owned(),
            root_run_id: self.root_run_id.to_owned(),
            kind: self.kind.clone(),
            checkpoint_name: self.checkpoint_name.to_owned(),
            input_signature_hash: self.signature.hash.clone(),
            input_signature_json: self.signature.json.clone(),
            input: self.input.clone(),
            worker_id: self.worker_id.to_owned(),
            lease_expires_at: self.lease_expires_at,
            now,
        }
    }
}

/// What one round of [`acquire_step`] produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// Completed earlier: the stored result.
    Replay {
        /// The result.
        result: Value,
        /// The completed step.
        step_id: String,
    },
    /// Ours now (inserted or reclaimed); `fence` is ours.
    Claimed(StepRecord),
    /// Held by someone else under a live lease.
    Wait(StepRecord),
}

/// What the caller already knows about a step's row.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownRow {
    /// Nothing: read it first.
    Unknown,
    /// The caller believes there is no row (e.g. it was not among the run's preloaded steps):
    /// go straight to insert-if-absent.
    Absent,
    /// A row the caller read earlier.
    Row(Box<StepRecord>),
}

/// Read-decide-act until the outcome is settled. A stale `known` row is harmless: every write is
/// an insert-if-absent or a compare-and-set that returns the current row when it loses, and the
/// loop decides again from that. Each retry follows a write that lost to another writer, so the
/// loop is bounded by contention, not by time.
pub async fn acquire_step(
    store: &dyn DurableStore,
    claim: &StepClaim<'_>,
    known: KnownRow,
    now: i64,
) -> Result<Acquired, Error> {
    let mut existing = match known {
        KnownRow::Row(row) => Some(*row),
        KnownRow::Absent => None,
        KnownRow::Unknown => store.get_step(claim.run_id, claim.checkpoint_name).await?,
    };
    loop {
        match decide_step(existing.as_ref(), &claim.kind, &claim.signature.json, now)? {
            StepDecision::Replay(result) => {
                let step_id = existing.map(|row| row.step_id).unwrap_or_default();
                return Ok(Acquired::Replay { result, step_id });
            }
            StepDecision::Wait { .. } => {
                let row = existing.ok_or_else(|| {
                    Error::internal("decide_step asked to wait without a row", None)
                })?;
                return Ok(Acquired::Wait(row));
            }
            StepDecision::Insert => {
                let inserted = store.insert_step(claim.new_step(now)).await?;
                match inserted {
                    InsertStep::Inserted(row) => return Ok(Acquired::Claimed(row)),
                    InsertStep::Existing(row) => existing = Some(row),
                }
            }
            StepDecision::Reclaim {
                expected_state,
                expected_fence,
            } => {
                let step_id = existing
                    .as_ref()
                    .map(|row| row.step_id.clone())
                    .unwrap_or_default();
                let outcome = store
                    .claim_step(ClaimStep {
                        step_id,
                        expected_state,
                        expected_fence,
                        worker_id: claim.worker_id.to_owned(),
                        lease_expires_at: claim.lease_expires_at,
                        now,
                    })
                    .await?;
                match outcome {
                    StepCas::Applied(row) => return Ok(Acquired::Claimed(row)),
                    StepCas::Conflict(row) => existing = row,
                }
            }
        }
    }
}

/// The result every caller of a completed step sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// The stored result.
    pub value: Value,
    /// True when another worker completed the step first and its result was adopted (our
    /// result and ledger rows were not written).
    pub adopted: bool,
}

/// Completes a claimed step under its fence, writing `ledger` with it. Returns the result every
/// caller must see: ours, or the stored result of a worker that completed first. Fails with
/// [`Error::LeaseLost`] when the step moved on without a result.
pub async fn complete_fenced(
    store: &dyn DurableStore,
    step_id: &str,
    fence: u32,
    result: Value,
    ledger: Vec<LedgerEntry>,
    now: i64,
) -> Result<Completed, Error> {
    let outcome = store
        .complete_step(CompleteStep {
            step_id: step_id.to_owned(),
            fence,
            result: result.clone(),
            ledger,
            now,
        })
        .await?;
    settle_completion(outcome, result, step_id)
}

/// What [`record_completed`] settled on.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Stored, or the stored result of another worker adopted.
    Completed(Completed),
    /// Another attempt's row stands unfinished under the step's name: an attempt deposed while
    /// its calls ran claimed it after this one loaded its steps. The caller claims the step
    /// through the claim loop, as it would have had it seen the row first (waiting for a live
    /// holder, reclaiming an expired or failed one), and completes it under that claim.
    Held {
        /// The row in the way.
        row: Box<StepRecord>,
        /// The result that was not recorded, handed back.
        result: Value,
        /// The ledger rows that were not written, handed back.
        ledger: Vec<LedgerEntry>,
    },
}

/// Stores a call whose claim was deferred (see [`decide::defers_claim`](crate::decide::defers_claim)):
/// its row, already completed, and `ledger`, in one transaction fenced by `attempt_id`. Returns
/// the result every caller must see, as [`complete_fenced`] does, or the unfinished row that
/// stands in the way; [`Error::LeaseLost`] when the attempt was deposed.
pub async fn record_completed(
    store: &dyn DurableStore,
    step: NewStep,
    attempt_id: &str,
    result: Value,
    ledger: Vec<LedgerEntry>,
    now: i64,
) -> Result<Recorded, Error> {
    let record = RecordStep {
        step,
        attempt_id: attempt_id.to_owned(),
        result,
        ledger,
        now,
    };
    let outcome = store.record_step(&record).await?;
    match outcome {
        StepCas::Conflict(Some(row)) if row.state != crate::store::State::Completed => {
            Ok(Recorded::Held {
                row: Box::new(row),
                result: record.result,
                ledger: record.ledger,
            })
        }
        outcome => {
            settle_completion(outcome, record.result, &record.step.step_id).map(Recorded::Completed)
        }
    }
}

/// What a completion's compare-and-set means for its caller.
fn settle_completion(outcome: StepCas, result: Value, step_id: &str) -> Result<Completed, Error> {
    match outcome {
        StepCas::Applied(_) => Ok(Completed {
            value: result,
            adopted: false,
        }),
        StepCas::Conflict(current) => match resolve_fence_conflict(current.as_ref())? {
            FenceResolution::Adopt(winner) => Ok(Completed {
                value: winner,
                adopted: true,
            }),
            FenceResolution::LeaseLost => Err(Error::LeaseLost(format!(
                "step {step_id} was taken over by another worker before it completed"
            ))),
        },
    }
}
