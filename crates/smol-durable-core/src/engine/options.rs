//! What goes into a run and what comes out: requests, resume options, outputs and status.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::script::WorkflowSource;
use crate::store::{AttemptRecord, RunRecord, TaskRecord};

/// A new run: the script plus per-run settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunRequest {
    /// The workflow.
    pub source: WorkflowSource,
    /// `args`.
    pub args: Value,
    /// Output-token allowance.
    pub budget_total: Option<u64>,
    /// Default provider for this run (else the engine's).
    pub provider: Option<String>,
    /// Working directory recorded with the run (part of agent signatures).
    pub cwd: Option<String>,
    /// Agent concurrency cap for this run (else the engine's limit).
    pub max_parallel_agents: Option<usize>,
    /// Stop at the first wait that finds no signal (see [`Self::detach_on_wait`]).
    pub detach_on_wait: bool,
}

impl RunRequest {
    /// A run of `source` with `args`.
    pub fn new(source: WorkflowSource, args: Value) -> Self {
        Self {
            source,
            args,
            budget_total: None,
            provider: None,
            cwd: None,
            max_parallel_agents: None,
            detach_on_wait: false,
        }
    }

    /// Stop at the first wait that finds no signal: the run is handed back (to any worker, or
    /// a later resume) until the wait's deadline or a signal, and the run's handle ends with
    /// [`Error::Detached`](crate::Error::Detached). For processes that must not block on
    /// humans.
    pub fn detach_on_wait(mut self) -> Self {
        self.detach_on_wait = true;
        self
    }

    /// Sets the budget.
    pub fn budget_total(mut self, tokens: u64) -> Self {
        self.budget_total = Some(tokens);
        self
    }

    /// Sets the default provider.
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.provider = Some(name.into());
        self
    }

    /// Records the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Caps concurrent agent calls.
    pub fn max_parallel_agents(mut self, cap: usize) -> Self {
        self.max_parallel_agents = Some(cap);
        self
    }
}

/// How to resume.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ResumeOptions {
    /// Wait for a live owner's lease to expire (default); otherwise fail with
    /// [`Error::RunBusy`](crate::Error::RunBusy).
    pub no_wait: bool,
    /// Override the stored budget for this attempt.
    pub budget_total: Option<u64>,
    /// Override the stored default provider.
    pub provider: Option<String>,
    /// Run this source instead of re-reading the stored path.
    pub source: Option<WorkflowSource>,
    /// Stop at the first wait that finds no signal (see [`RunRequest::detach_on_wait`]).
    pub detach_on_wait: bool,
    /// Set by an offline replay ([`Engine::replay`](crate::Engine::replay)) only.
    pub(crate) replay: Option<std::sync::Arc<super::replay::ReplayRecorder>>,
}

impl ResumeOptions {
    /// Defaults: wait for a live owner, reuse everything stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail instead of waiting for another owner's lease.
    pub fn no_wait(mut self) -> Self {
        self.no_wait = true;
        self
    }

    /// A larger (or smaller) allowance.
    pub fn budget_total(mut self, tokens: u64) -> Self {
        self.budget_total = Some(tokens);
        self
    }

    /// A fixed script.
    pub fn source(mut self, source: WorkflowSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Stop at the first wait that finds no signal (see [`RunRequest::detach_on_wait`]).
    pub fn detach_on_wait(mut self) -> Self {
        self.detach_on_wait = true;
        self
    }
}

/// Token usage of a run, summed over its ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RunOutput {
    /// Task.
    pub task_id: String,
    /// Run.
    pub run_id: String,
    /// The attempt that produced the result.
    pub attempt: u32,
    /// The workflow's value.
    pub result: Value,
    /// Tokens spent over the whole run (all attempts).
    pub token_usage: TokenUsage,
}

/// A run with its task and attempts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunStatus {
    /// The run.
    pub run: RunRecord,
    /// Its task.
    pub task: TaskRecord,
    /// Attempts of the task, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The run is `running` but nobody executes it any more (see
    /// [`Engine::owner_gone`](crate::Engine::owner_gone)):
    /// it moves again only when resumed, or claimed by a worker.
    pub owner_gone: bool,
}
