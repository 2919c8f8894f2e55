//! [`Engine`]: the one handle host applications hold, and what it does with runs.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::options::{ResumeOptions, RunOutput, RunRequest, RunStatus, TokenUsage};
use super::run_handle::RunHandle;
use super::shared::EngineShared;
use super::usage::ledger_usage;
use crate::agent_options::StepIdentity;
use crate::script::WorkflowSource;
use crate::store::{
    CancelRequest, ClaimScope, DurableStore, EventRecord, NewRun, OwnerRecord, RunFilter,
    RunRecord, State, TaskRecord, WorkflowInfo,
};
use crate::{Error, RunError};

/// The durable workflow engine: one non-generic handle, cheap to clone.
///
/// See the [crate docs](crate) for a complete example.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) shared: Arc<EngineShared>,
}

impl Engine {
    pub(super) fn from_shared(shared: Arc<EngineShared>) -> Self {
        Self { shared }
    }

    /// This process's owner id (`owner_…`).
    pub fn owner_id(&self) -> &str {
        &self.shared.owner_id
    }

    /// The store, behind the engine's retries of retryable errors
    /// ([`Limits::store_retry`](crate::Limits::store_retry)).
    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.shared.store
    }

    /// Runs a workflow to its end in this process. A failure names the run it failed (when it
    /// got as far as creating one), to resume or inspect it.
    pub async fn run(&self, source: WorkflowSource, args: Value) -> Result<RunOutput, RunError> {
        let handle = self.start_run(RunRequest::new(source, args)).await?;
        let run_id = handle.run_id().to_owned();
        handle
            .join()
            .await
            .map_err(|error| RunError::new(Some(run_id), error))
    }

    /// Creates a local run (task + run + attempt 1) and starts executing it.
    pub async fn start(&self, request: RunRequest) -> Result<RunHandle, Error> {
        Ok(self.start_run(request).await?)
    }

    /// [`start`](Self::start), naming the run in the error once it exists.
    async fn start_run(&self, request: RunRequest) -> Result<RunHandle, RunError> {
        let before = |error: Error| RunError::new(None, error);
        self.shared.check_executes().map_err(before)?;
        self.shared
            .check_provider(&self.run_provider(&request))
            .map_err(before)?;
        let new_run = self
            .new_run(&request, ClaimScope::Local)
            .await
            .map_err(before)?;
        let created = self
            .shared
            .store
            .create_run(new_run)
            .await
            .map_err(|error| before(error.into()))?;
        let run_id = created.run.run_id.clone();
        let overrides = request
            .detach_on_wait
            .then(|| ResumeOptions::new().detach_on_wait());
        self.shared
            .launch(created.run, request.source, overrides, false)
            .await
            .map_err(|error| RunError::new(Some(run_id), error))
    }

    fn run_provider(&self, request: &RunRequest) -> String {
        request
            .provider
            .clone()
            .unwrap_or_else(|| self.shared.default_provider.clone())
    }

    /// The task and root run a request creates: its metadata read, its script stored
    /// content-addressed (so any worker or a later resume can run it without the file), and the
    /// defaults in force recorded with it.
    pub(super) async fn new_run(
        &self,
        request: &RunRequest,
        scope: ClaimScope,
    ) -> Result<NewRun, Error> {
        let shared = &self.shared;
        self.register_owner().await?;
        // A submitter reads no metadata (it has no script engine) and names no provider: the
        // worker that runs the task does both.
        let (meta, provider) = if shared.executes {
            let meta = shared.scripts.read_metadata(&request.source)?;
            (Some(meta), Some(self.run_provider(request)))
        } else {
            (None, request.provider.clone())
        };
        let hash = request.source.content_hash();
        if shared.known_script(&hash).is_none() {
            shared.store.put_script(&hash, &request.source.text).await?;
            shared.remember_script(&hash, &request.source.text);
        }
        let mut workflow = WorkflowInfo::new();
        workflow.mode = Some(scope.as_str().to_owned());
        workflow.script_path = Some(request.source.path.display().to_string());
        workflow.script_hash = Some(hash);
        workflow.metadata = meta.and_then(|meta| serde_json::to_value(&meta).ok());
        workflow.provider = provider;
        workflow.model_map = shared.model_map.clone();
        workflow.max_parallel_agents = request
            .max_parallel_agents
            .or(shared.limits.max_parallel_agents);
        workflow.cwd = request.cwd.clone();
        workflow.step_identity = Some(StepIdentity::CURRENT_VERSION);
        let now = shared.clock.now_ms();
        let mut new_run = NewRun::new(
            scope.clone(),
            &shared.owner_id,
            workflow,
            request.args.clone(),
            now,
        );
        new_run.budget_total = request.budget_total;
        new_run.params = serde_json::json!({
            "mode": scope.as_str(),
            "scriptPath": request.source.path.display().to_string(),
            "args": request.args,
            "budgetTotal": request.budget_total,
        });
        Ok(new_run)
    }

    /// Resumes a run: opens attempt N+1 and replays it from the top. Resuming a completed run
    /// returns its stored result and changes nothing.
    pub async fn resume(&self, run_id: &str, options: ResumeOptions) -> Result<RunHandle, Error> {
        self.shared.check_executes()?;
        self.register_owner().await?;
        let run = self.get_root_run(run_id, "resume", "").await?;
        if run.state == State::Completed {
            return self.completed_handle(run).await;
        }
        let source = self.source_or_stored(options.source.clone(), &run).await?;
        self.shared.launch(run, source, Some(options), true).await
    }

    /// Requests cancellation of a run (its root run, for a child). A run executing in this
    /// process stops at once; one executing elsewhere notices at its next heartbeat; a pending
    /// task is cancelled immediately.
    pub async fn cancel(&self, run_id: &str) -> Result<CancelRequest, Error> {
        let shared = &self.shared;
        let run = self.get_run(run_id).await?;
        let outcome = shared
            .store
            .request_cancel(&run.root_run_id, shared.clock.now_ms())
            .await?;
        if let Ok(live) = shared.live.lock() {
            if let Some(token) = live.get(&run.root_run_id) {
                token.cancel();
            }
        }
        Ok(outcome)
    }

    /// A run with its task and attempts, by run id or by task id (its root run).
    pub async fn status(&self, id: &str) -> Result<RunStatus, Error> {
        let store = &self.shared.store;
        let run = match store.get_run(id).await? {
            Some(run) => run,
            None => {
                let filter = RunFilter {
                    task_id: Some(id.to_owned()),
                    roots_only: true,
                    ..RunFilter::default()
                };
                store
                    .list_runs(&filter)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::RunNotFound {
                        run_id: id.to_owned(),
                        store: store.describe(),
                    })?
            }
        };
        let run_id = run.run_id.as_str();
        let task = self
            .shared
            .store
            .get_task(&run.task_id)
            .await?
            .ok_or_else(|| {
                Error::Store(crate::StoreError::new(
                    crate::StoreErrorKind::Corrupt,
                    "status",
                    format!(
                        "run {run_id} names task {}, which does not exist",
                        run.task_id
                    ),
                ))
            })?;
        let attempts = self.shared.store.list_attempts(&task.task_id).await?;
        let owner_gone = self.owner_gone(&task).await?;
        Ok(RunStatus {
            run,
            task,
            attempts,
            owner_gone,
        })
    }

    /// Whether a `running` task's owner is gone: its process on this host no longer exists, or
    /// its lease has run out (an owner elsewhere stopped renewing it). A run whose owner is gone
    /// only moves again when it is resumed, or, for a submitted run, claimed by a worker.
    pub async fn owner_gone(&self, task: &TaskRecord) -> Result<bool, Error> {
        self.shared.owner_gone(task).await
    }

    /// Deletes a finished root run with its child runs, attempts, steps, ledger rows and
    /// events. A child run is refused (delete its root), and so is a run that has not finished
    /// (cancel it first).
    pub async fn delete(&self, run_id: &str) -> Result<(), Error> {
        let run = self.get_run(run_id).await?;
        if !run.is_root() {
            return Err(Error::InvalidRequest(format!(
                "run {run_id} is a child of {}; delete its root run",
                run.root_run_id
            )));
        }
        self.shared.store.delete_task(&run.task_id).await?;
        Ok(())
    }

    /// Tokens a root run has spent so far, every attempt and child included (from the budget
    /// ledger, so a run killed halfway shows what its completed calls cost).
    pub async fn token_usage(&self, root_run_id: &str) -> Result<TokenUsage, Error> {
        ledger_usage(self.shared.store.as_ref(), root_run_id).await
    }

    /// Runs matching a filter, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, Error> {
        Ok(self.shared.store.list_runs(filter).await?)
    }

    /// Stored events of a run (and its children) after `after_seq`, in order.
    pub async fn events(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        Ok(self
            .shared
            .store
            .read_events(run_id, after_seq, limit)
            .await?)
    }

    pub(super) async fn get_run(&self, run_id: &str) -> Result<RunRecord, Error> {
        self.shared
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound {
                run_id: run_id.to_owned(),
                store: self.shared.store.describe(),
            })
    }

    pub(super) async fn register_owner(&self) -> Result<(), Error> {
        let shared = &self.shared;
        shared
            .owner_registered
            .get_or_try_init(|| async {
                let owner =
                    OwnerRecord::this_process(shared.owner_id.clone(), shared.clock.now_ms());
                shared.store.register_owner(owner).await
            })
            .await?;
        Ok(())
    }

    /// A root run, for the operation `action` names; a child run is refused, naming its root,
    /// with `why` after.
    pub(super) async fn get_root_run(
        &self,
        run_id: &str,
        action: &str,
        why: &str,
    ) -> Result<RunRecord, Error> {
        let run = self.get_run(run_id).await?;
        if !run.is_root() {
            return Err(Error::InvalidRequest(format!(
                "{run_id} is a child run; {action} its root run {}{why}",
                run.root_run_id
            )));
        }
        Ok(run)
    }

    /// `given`, else the run's own script ([`stored_source`](Self::stored_source)).
    pub(super) async fn source_or_stored(
        &self,
        given: Option<WorkflowSource>,
        run: &RunRecord,
    ) -> Result<WorkflowSource, Error> {
        match given {
            Some(source) => Ok(source),
            None => self.stored_source(run).await,
        }
    }

    /// The script of a stored run: re-read from its path so a fixed script can continue a
    /// failed run, else the stored source.
    pub(super) async fn stored_source(&self, run: &RunRecord) -> Result<WorkflowSource, Error> {
        let path = run.workflow.script_path.clone().unwrap_or_default();
        let path = PathBuf::from(path);
        if let Some(source) = self.shared.workflows_by_path.get(&path) {
            return Ok(source.clone());
        }
        // A relative path is the run's: relative to the directory it ran in, not this
        // process's.
        let path = match &run.workflow.cwd {
            Some(cwd) if path.is_relative() && !path.as_os_str().is_empty() => {
                std::path::Path::new(cwd).join(&path)
            }
            _ => path,
        };
        let read_path = path.clone();
        if let Ok(Ok(source)) =
            tokio::task::spawn_blocking(move || WorkflowSource::from_file(&read_path)).await
        {
            return Ok(source);
        }
        if let Some(hash) = &run.workflow.script_hash {
            if let Some(text) = self.shared.store.get_script(hash).await? {
                return Ok(WorkflowSource { path, text });
            }
        }
        Err(Error::InvalidRequest(format!(
            "cannot resume {}: its script {} is gone and no copy is stored",
            run.run_id,
            path.display()
        )))
    }

    async fn completed_handle(&self, run: RunRecord) -> Result<RunHandle, Error> {
        let attempt = self
            .shared
            .store
            .list_attempts(&run.task_id)
            .await?
            .iter()
            .filter(|attempt| attempt.state == State::Completed)
            .map(|attempt| attempt.attempt)
            .max()
            .unwrap_or(0);
        let output = RunOutput {
            task_id: run.task_id.clone(),
            run_id: run.run_id.clone(),
            attempt,
            result: run.result().cloned().unwrap_or(Value::Null),
            token_usage: ledger_usage(self.shared.store.as_ref(), &run.run_id).await?,
        };
        let (_, events) = mpsc::unbounded_channel();
        Ok(RunHandle {
            run_id: run.run_id,
            task_id: run.task_id,
            cancel: CancellationToken::new(),
            events: Some(events),
            join: tokio::spawn(async move { Ok(output) }),
        })
    }
}
