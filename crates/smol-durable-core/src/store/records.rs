//! Rows as the store hands them to the core: plain serde structs mirroring SPEC §9's tables.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(into = "String", from = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know; the core refuses to guess what it means.
            Unknown(String),
        }

        impl $name {
            /// The stored spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(other) => other,
                }
            }

            /// Parses a stored value; unknown spellings become `Unknown`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.as_str().to_owned()
            }
        }
    };
}

string_enum!(
    /// State of a task, run or step.
    State {
        /// Not started, or released for someone to pick up.
        Pending => "pending",
        /// Someone holds it (under a lease).
        Running => "running",
        /// Finished with a result; final.
        Completed => "completed",
        /// Finished with an error.
        Failed => "failed",
        /// Stopped on request.
        Cancelled => "cancelled",
    }
);

impl State {
    /// Completed, failed or cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

string_enum!(
    /// Who may execute a task.
    ClaimScope {
        /// Only the owner that created (or resumed) it: `Engine::run`.
        Local => "local",
        /// Any worker: `Engine::submit` + `Engine::worker`.
        Runner => "runner",
    }
);

string_enum!(
    /// What a durable step stands for.
    StepKind {
        /// An `agent(...)` call.
        Agent => "agent",
        /// A `sleep(ms)` call.
        Sleep => "sleep",
        /// A child `workflow(...)` call.
        Workflow => "workflow",
        /// A `waitFor(...)` or `waitForAny(...)` call: waiting for a signal.
        Wait => "wait",
        /// A `signal(runId, name, payload)` call: a signal sent to another run.
        Signal => "signal",
    }
);

string_enum!(
    /// State of a signal in a run's mailbox.
    SignalState {
        /// Stored, not yet taken by a wait.
        Pending => "pending",
        /// Taken by the wait step named in [`SignalRecord::step_id`].
        Consumed => "consumed",
        /// Refused at consumption (its payload did not match the wait's schema); see
        /// [`SignalRecord::reason`].
        Rejected => "rejected",
    }
);

/// What the core stores about a run's workflow (`workflow_run_json`): enough to resume it with
/// the same defaults in another process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowInfo {
    /// `local` or `runner`, as smol-wf wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Path of the script as given at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_path: Option<String>,
    /// Content hash of the script source stored with [`DurableStore::put_script`](crate::DurableStore::put_script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_hash: Option<String>,
    /// `meta` of the script, read without running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Default provider name for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Model aliases in force for this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_map: BTreeMap<String, String>,
    /// Agent concurrency cap for this run (root and children together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_agents: Option<usize>,
    /// Working directory of the run: a property of the run, reused on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Which rules named the steps of a root run
    /// ([`StepIdentity::CURRENT_VERSION`](crate::agent_options::StepIdentity::CURRENT_VERSION)
    /// since they are recorded; absent for runs of smol-wf 0.3.4 and smol-durable 0.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_identity: Option<u32>,
    /// Where a forked run came from ([`Engine::fork`](crate::Engine::fork)); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
}

/// The lineage of a forked run: which run it was forked from, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ForkOrigin {
    /// The source run.
    pub run_id: String,
    /// The number (as `history` shows it: 1 for the first step the source reached) of the step
    /// the fork started before; `None` when every completed step was copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_step: Option<u32>,
    /// That step's checkpoint name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_checkpoint: Option<String>,
    /// How many completed steps were copied.
    pub copied_steps: u32,
}

impl WorkflowInfo {
    /// Empty info; fill the public fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// `meta.name` of the workflow, when its metadata has a string name.
    pub fn name(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("name")?.as_str()
    }
}

/// A row of `sw_workflow_tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `task_…`
    pub task_id: String,
    /// Always `workflow.run` today.
    pub task_name: String,
    /// Task state.
    pub state: State,
    /// Who may claim it.
    pub claim_scope: ClaimScope,
    /// Parameters the task was submitted with.
    pub params: Value,
    /// Owner that created (or, for local tasks, last adopted) the task.
    pub submitted_by_owner_id: Option<String>,
    /// Owner currently executing it.
    pub claimed_by_owner_id: Option<String>,
    /// Until when the claimant's lease holds.
    pub lease_expires_at: Option<i64>,
    /// Attempts allowed before the task fails for good.
    pub max_attempts: u32,
    /// Idempotency key, unique per claim scope.
    pub idempotency_key: Option<String>,
    /// Not to be claimed before this time (retry backoff, parked sleeps).
    pub not_before: Option<i64>,
    /// Result of the root run once completed.
    pub completed_payload: Option<Value>,
    /// Why it failed or was cancelled.
    pub failure_reason: Option<Value>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A row of `sw_workflow_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `run_…`
    pub run_id: String,
    /// The task this run belongs to (children share the root's task).
    pub task_id: String,
    /// The root run (itself for a root run).
    pub root_run_id: String,
    /// Parent run of a child run.
    pub parent_run_id: Option<String>,
    /// The parent's `workflow` step that started this child.
    pub parent_step_id: Option<String>,
    /// Run state.
    pub state: State,
    /// Script and defaults.
    pub workflow: WorkflowInfo,
    /// Arguments.
    pub args: Value,
    /// Output-token allowance of the root run.
    pub budget_total: Option<u64>,
    /// Cached spent tokens (the ledger is the source of truth).
    pub budget_spent: u64,
    /// The workflow's result once completed.
    pub completed_payload: Option<Value>,
    /// Why it failed or was cancelled.
    pub failure_reason: Option<Value>,
    /// When cancellation was requested, if it was.
    pub cancel_requested_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

impl RunRecord {
    /// The workflow's result once completed. smol-wf 0.3.4 stored it wrapped as
    /// `{"result": value}`, and so does smol-durable for the runs smol-wf started
    /// ([`Self::completed_payload_of`]); other runs store the value itself.
    pub fn result(&self) -> Option<&Value> {
        let payload = self.completed_payload.as_ref()?;
        match payload {
            Value::Object(map) if self.started_by_smol_wf() && map.len() == 1 => {
                map.get("result").or(Some(payload))
            }
            _ => Some(payload),
        }
    }

    /// What to store as `completed_payload` when the run completes with `result`: wrapped
    /// for a run smol-wf started, so smol-wf and [`Self::result`] both read it back.
    pub fn completed_payload_of(&self, result: Value) -> Value {
        if self.started_by_smol_wf() {
            serde_json::json!({ "result": result })
        } else {
            result
        }
    }

    /// smol-wf stored no script with its runs; smol-durable stores one with every run.
    fn started_by_smol_wf(&self) -> bool {
        self.workflow.script_hash.is_none()
    }
}

impl RunRecord {
    /// Whether this is a root run.
    pub fn is_root(&self) -> bool {
        self.run_id == self.root_run_id
    }
}

/// A row of `sw_workflow_attempts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// `attempt_…`
    pub attempt_id: String,
    /// The root run attempted.
    pub run_id: String,
    /// Its task.
    pub task_id: String,
    /// 1-based, unique per task.
    pub attempt: u32,
    /// Owner executing it.
    pub worker_id: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub state: State,
    /// Lease of the attempt.
    pub lease_expires_at: Option<i64>,
    /// Start time.
    pub started_at: i64,
    /// End time.
    pub completed_at: Option<i64>,
    /// Why it failed or was cancelled.
    pub failure_reason: Option<Value>,
}

/// A row of `sw_workflow_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `step_…`
    pub step_id: String,
    /// Run the step belongs to.
    pub run_id: String,
    /// Root of that run.
    pub root_run_id: String,
    /// Agent, sleep or workflow.
    pub kind: StepKind,
    /// `step:sig_<hash>[#n]`, unique per run.
    pub checkpoint_name: String,
    /// 24 hex characters.
    pub input_signature_hash: String,
    /// The exact canonical signature.
    pub input_signature_json: String,
    /// Step state.
    pub state: State,
    /// Step input (for sleeps: `{"durationMs","wakeAt"}`, fixed at creation).
    pub input: Value,
    /// Stored result once completed (never the provider's `raw`).
    pub result: Option<Value>,
    /// Why the step last failed.
    pub failure_reason: Option<Value>,
    /// Owner holding (or last holding) the step.
    pub worker_id: Option<String>,
    /// Lease of the holder.
    pub lease_expires_at: Option<i64>,
    /// The fence: how many times the step has been claimed (stored in column `attempts`). A
    /// completion or failure must carry it.
    pub fence: u32,
    /// When it was last claimed.
    pub last_attempt_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

impl StepRecord {
    /// The order a run reached its steps: creation time, then id (ids made in one process
    /// increase, so a tie in the millisecond keeps the order they were made). `load_steps`
    /// returns steps in it, `history` numbers them by it, and a fork point counts by it.
    pub fn reached_order(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.step_id.cmp(&b.step_id))
    }
}

/// A row of `sw_workflow_signals`: one signal in a run's mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// `signal_…`
    pub signal_id: String,
    /// The run it was sent to.
    pub run_id: String,
    /// That run's root.
    pub root_run_id: String,
    /// The signal's name (what a wait waits for).
    pub name: String,
    /// The payload (JSON).
    pub payload: Value,
    /// Unique per target run: a second send with the same key returns this signal.
    pub idempotency_key: Option<String>,
    /// Pending, consumed or rejected.
    pub state: SignalState,
    /// The wait step that consumed it.
    pub step_id: Option<String>,
    /// Why it was rejected.
    pub reason: Option<Value>,
    /// Mailbox order: increasing in the order signals were stored.
    pub seq: i64,
    /// When it was stored.
    pub created_at: i64,
    /// When it was consumed or rejected.
    pub updated_at: i64,
}

/// What an attempt reads before it runs a root run's script
/// ([`DurableStore::load_run_start`](crate::DurableStore::load_run_start)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStart {
    /// The root run's steps, as [`load_steps`](crate::DurableStore::load_steps) reads them.
    pub steps: Vec<StepRecord>,
    /// What its tree spent, as [`budget_spent`](crate::DurableStore::budget_spent) sums it.
    pub budget_spent: u64,
}

/// A row of `sw_budget_ledger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `budget_…`
    pub budget_entry_id: String,
    /// Run whose step was billed.
    pub run_id: String,
    /// Root run the budget belongs to.
    pub root_run_id: String,
    /// The billed step.
    pub step_id: Option<String>,
    /// What the row bills.
    pub source_type: LedgerSource,
    /// Idempotency key within `(root_run_id, source_type)`.
    pub source_id: String,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Full usage as reported (read leniently: [`Usage::from_stored`](crate::Usage::from_stored)).
    pub usage: Option<crate::Usage>,
    /// Creation time.
    pub created_at: i64,
}

impl LedgerEntry {
    /// A ledger row billing `usage` (its output tokens) to `step_id`; the id is generated.
    pub fn new(
        run_id: &str,
        root_run_id: &str,
        step_id: &str,
        source_type: LedgerSource,
        source_id: String,
        usage: Option<&crate::Usage>,
        created_at: i64,
    ) -> Self {
        Self {
            budget_entry_id: crate::new_id("budget"),
            run_id: run_id.to_owned(),
            root_run_id: root_run_id.to_owned(),
            step_id: Some(step_id.to_owned()),
            source_type,
            source_id,
            output_tokens: usage.and_then(|u| u.output_tokens).unwrap_or(0),
            usage: usage.cloned(),
            created_at,
        }
    }

    /// The token counts of the stored usage; output tokens default to the row's column. No
    /// cost.
    pub fn tokens(&self) -> crate::Usage {
        let usage = self.usage.clone().unwrap_or_default();
        crate::Usage {
            output_tokens: usage.output_tokens.or(Some(self.output_tokens)),
            cost: None,
            ..usage
        }
    }
}

/// What a ledger row bills. Stored as text (`source_type`); a value this version does not know
/// is kept as it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
#[non_exhaustive]
pub enum LedgerSource {
    /// A completed agent call (`agent_step`); `source_id` is the step id.
    AgentStep,
    /// A paid try that did not become the step's result — it failed, its answer broke the
    /// schema, or it was too large to store (`agent_attempt`, its stored name); `source_id` is
    /// `<step id>:<fence>:<label>`.
    AgentTry,
    /// The cost of a step a fork copied from its source run (`copied_step`): shown with the
    /// fork's usage, never counted as spent by it (the source paid for it); `source_id` is
    /// `<copied step id>:<source row id>`.
    Copied,
    /// Any other stored value.
    Other(String),
}

impl LedgerSource {
    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            LedgerSource::AgentStep => "agent_step",
            LedgerSource::AgentTry => "agent_attempt",
            LedgerSource::Copied => "copied_step",
            LedgerSource::Other(value) => value,
        }
    }

    /// Reads the stored text.
    pub fn parse(value: &str) -> Self {
        match value {
            "agent_step" => LedgerSource::AgentStep,
            "agent_attempt" => LedgerSource::AgentTry,
            "copied_step" => LedgerSource::Copied,
            other => LedgerSource::Other(other.to_owned()),
        }
    }

    /// Whether a row of this kind counts as spent against the run's budget: every kind but
    /// [`Copied`](Self::Copied), whose tokens the source run spent. Stores that aggregate in
    /// SQL exclude the stored text [`COPIED_STEP`](Self::COPIED_STEP).
    pub fn is_spent(&self) -> bool {
        *self != LedgerSource::Copied
    }

    /// The stored text of [`Copied`](Self::Copied).
    pub const COPIED_STEP: &'static str = "copied_step";
}

impl From<String> for LedgerSource {
    fn from(value: String) -> Self {
        Self::parse(&value)
    }
}

impl From<LedgerSource> for String {
    fn from(source: LedgerSource) -> Self {
        source.as_str().to_owned()
    }
}

impl std::fmt::Display for LedgerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored event (`sw_workflow_events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// `evt_…`
    pub event_id: String,
    /// Position in the store, increasing in append order; assigned by the store.
    pub seq: i64,
    /// Run the event is about.
    pub run_id: String,
    /// Root run.
    pub root_run_id: String,
    /// Attempt that produced it.
    pub attempt_id: Option<String>,
    /// Step it concerns.
    pub step_id: Option<String>,
    /// `workflow.started`, `workflow.log`, … as stored (a newer version may have written a type
    /// this one does not know); [`EventRecord::typed`] reads it as an [`EventType`].
    ///
    /// [`EventType`]: crate::EventType
    pub event_type: String,
    /// The full event document.
    pub payload: Value,
    /// Creation time.
    pub created_at: i64,
}

impl EventRecord {
    /// The event's type, when this version knows it.
    pub fn typed(&self) -> Option<crate::EventType> {
        crate::EventType::parse(&self.event_type)
    }
}

/// A process identity (`sw_workflow_owners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// `owner_…`
    pub owner_id: String,
    /// OS process id.
    pub pid: u32,
    /// Host name.
    pub hostname: String,
    /// Start time.
    pub started_at: i64,
    /// Last heartbeat.
    pub heartbeat_at: i64,
}

impl OwnerRecord {
    /// This process, as an owner.
    pub fn this_process(owner_id: String, now: i64) -> Self {
        Self {
            owner_id,
            pid: std::process::id(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            started_at: now,
            heartbeat_at: now,
        }
    }
}
