//! [`Engine`]: the one handle host applications hold.

mod attempt;
mod host;
mod runner;
pub mod steps;

pub use runner::{SubmitOptions, SubmittedRun, Worker, WorkerOptions, WorkerReport};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent_options::StepIdentity;
use crate::clock::{Clock, SystemClock};
use crate::events::{EventSink, SessionLogSink, WorkflowEvent};
use crate::limits::Limits;
use crate::script::{ScriptEngine, WorkflowSource};
use crate::store::{
    AttemptRecord, AttemptStart, CancelRequest, ClaimScope, DurableStore, EventRecord, NewRun,
    OwnerRecord, RetryingStore, RunFilter, RunRecord, StartAttempt, State, TaskRecord,
    WorkflowInfo,
};
use crate::{AgentProvider, Error};
use attempt::{AttemptPlan, RunSettings};

/// Configuration and services shared by every run of an engine.
#[derive(Debug)]
pub(crate) struct EngineShared {
    pub store: Arc<dyn DurableStore>,
    pub scripts: Arc<dyn ScriptEngine>,
    providers: BTreeMap<String, Arc<dyn AgentProvider>>,
    default_provider: String,
    model_map: BTreeMap<String, String>,
    pub limits: Limits,
    pub lease_ttl: Duration,
    pub clock: Arc<dyn Clock>,
    pub event_sinks: Vec<Arc<dyn EventSink>>,
    pub session_sink: Option<Arc<dyn SessionLogSink>>,
    pub named_workflows: HashMap<String, WorkflowSource>,
    pub workflows_by_path: HashMap<PathBuf, WorkflowSource>,
    pub owner_id: String,
    live: Mutex<HashMap<String, CancellationToken>>,
    owner_registered: tokio::sync::OnceCell<()>,
    /// Sources read from the store by content hash (immutable, so never stale).
    pub scripts_by_hash: Mutex<HashMap<String, String>>,
}

impl EngineShared {
    pub fn provider(&self, name: &str) -> Option<Arc<dyn AgentProvider>> {
        self.providers.get(name).cloned()
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    store: Option<Arc<dyn DurableStore>>,
    scripts: Option<Arc<dyn ScriptEngine>>,
    providers: Vec<Arc<dyn AgentProvider>>,
    default_provider: Option<String>,
    model_map: BTreeMap<String, String>,
    limits: Limits,
    lease_ttl: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    event_sinks: Vec<Arc<dyn EventSink>>,
    session_sink: Option<Arc<dyn SessionLogSink>>,
    named_workflows: HashMap<String, WorkflowSource>,
}

impl EngineBuilder {
    /// The store (required).
    pub fn store(mut self, store: Arc<dyn DurableStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The script engine (required).
    pub fn script_engine(mut self, scripts: Arc<dyn ScriptEngine>) -> Self {
        self.scripts = Some(scripts);
        self
    }

    /// Registers a provider under its [`AgentProvider::name`]; the first one registered is the
    /// default unless [`EngineBuilder::default_provider`] says otherwise.
    pub fn provider(mut self, provider: Arc<dyn AgentProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Whether a provider of this name is registered.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers
            .iter()
            .any(|provider| provider.name() == name)
    }

    /// Names the default provider.
    pub fn default_provider(mut self, name: impl Into<String>) -> Self {
        self.default_provider = Some(name.into());
        self
    }

    /// Maps a model alias (`agent(p, {model: alias})`) to a selector.
    pub fn model_alias(mut self, alias: impl Into<String>, selector: impl Into<String>) -> Self {
        self.model_map.insert(alias.into(), selector.into());
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Step and task lease duration (default 60 s); leases are renewed every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adds an event sink.
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.event_sinks.push(sink);
        self
    }

    /// Sets the session-log sink.
    pub fn session_log_sink(mut self, sink: Arc<dyn SessionLogSink>) -> Self {
        self.session_sink = Some(sink);
        self
    }

    /// Makes a workflow callable by name (`workflow("name")`) and by its path.
    pub fn workflow(mut self, name: impl Into<String>, source: WorkflowSource) -> Self {
        self.named_workflows.insert(name.into(), source);
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Engine, Error> {
        let store = self
            .store
            .ok_or_else(|| Error::Config("EngineBuilder needs a store".to_owned()))?;
        let scripts = self
            .scripts
            .ok_or_else(|| Error::Config("EngineBuilder needs a script engine".to_owned()))?;
        let mut providers = BTreeMap::new();
        for provider in &self.providers {
            let name = provider.name().to_owned();
            if providers
                .insert(name.clone(), Arc::clone(provider))
                .is_some()
            {
                return Err(Error::Config(format!("provider {name:?} registered twice")));
            }
        }
        let default_provider = match self.default_provider {
            Some(name) if providers.contains_key(&name) => name,
            Some(name) => {
                return Err(Error::Config(format!(
                    "default provider {name:?} is not registered"
                )))
            }
            None => self
                .providers
                .first()
                .map(|provider| provider.name().to_owned())
                .ok_or_else(|| {
                    Error::Config("EngineBuilder needs at least one provider".to_owned())
                })?,
        };
        let lease_ttl = self.lease_ttl.unwrap_or(Duration::from_secs(60));
        if lease_ttl < Duration::from_millis(3) {
            return Err(Error::Config("lease ttl must be at least 3 ms".to_owned()));
        }
        let workflows_by_path = self
            .named_workflows
            .values()
            .map(|source| (source.path.clone(), source.clone()))
            .collect();
        let store: Arc<dyn DurableStore> =
            Arc::new(RetryingStore::new(store, self.limits.store_retry));
        Ok(Engine {
            shared: Arc::new(EngineShared {
                store,
                scripts,
                providers,
                default_provider,
                model_map: self.model_map,
                limits: self.limits,
                lease_ttl,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                event_sinks: self.event_sinks,
                session_sink: self.session_sink,
                named_workflows: self.named_workflows,
                workflows_by_path,
                owner_id: crate::new_id("owner"),
                live: Mutex::new(HashMap::new()),
                owner_registered: tokio::sync::OnceCell::new(),
                scripts_by_hash: Mutex::new(HashMap::new()),
            }),
        })
    }
}

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
        }
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
    /// Wait for a live owner's lease to expire (default); otherwise fail with [`Error::RunBusy`].
    pub no_wait: bool,
    /// Override the stored budget for this attempt.
    pub budget_total: Option<u64>,
    /// Override the stored default provider.
    pub provider: Option<String>,
    /// Run this source instead of re-reading the stored path.
    pub source: Option<WorkflowSource>,
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

impl RunOutput {
    /// The CLI's JSON (`{"tokenUsage", "runID", "results"}`) as a value. Serialised, its keys
    /// come out sorted; [`to_cli_text`](Self::to_cli_text) keeps smol-wf's order.
    pub fn to_cli_json(&self) -> Value {
        serde_json::json!({
            "tokenUsage": self.token_usage,
            "runID": self.run_id,
            "results": self.result,
        })
    }

    /// The CLI's JSON pretty-printed in smol-wf's key order (`tokenUsage`, `runID`, `results`),
    /// for tools that read it positionally. Written by hand because serde_json's maps sort keys.
    pub fn to_cli_text(&self) -> String {
        let nested = |value: &Value| {
            serde_json::to_string_pretty(value)
                .unwrap_or_else(|_| "null".to_owned())
                .replace('\n', "\n  ")
        };
        format!(
            "{{\n  \"tokenUsage\": {},\n  \"runID\": {},\n  \"results\": {}\n}}",
            nested(&serde_json::json!(self.token_usage)),
            Value::String(self.run_id.clone()),
            nested(&self.result),
        )
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    run_id: String,
    task_id: String,
    cancel: CancellationToken,
    events: Option<mpsc::UnboundedReceiver<WorkflowEvent>>,
    join: JoinHandle<Result<RunOutput, Error>>,
}

impl RunHandle {
    /// The run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Its task.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The run's events, in order, from its start (once; later calls return `None`).
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<WorkflowEvent>> {
        self.events.take()
    }

    /// Cancels the run cooperatively: outstanding host calls reject with `workflow cancelled`
    /// and the run ends `cancelled` (resumable).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the run to end.
    pub async fn join(self) -> Result<RunOutput, Error> {
        match self.join.await {
            Ok(result) => result,
            Err(join_error) => Err(Error::Config(format!("run task failed: {join_error}"))),
        }
    }
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
    /// The run is `running` but nobody executes it any more (see [`Engine::owner_gone`]):
    /// it moves again only when resumed, or claimed by a worker.
    pub owner_gone: bool,
}

/// The durable workflow engine: one non-generic handle, cheap to clone.
///
/// See the [crate docs](crate) for a complete example.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<EngineShared>,
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// This process's owner id (`owner_…`).
    pub fn owner_id(&self) -> &str {
        &self.shared.owner_id
    }

    /// The store, behind the engine's retries of retryable errors
    /// ([`Limits::store_retry`]).
    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.shared.store
    }

    /// Runs a workflow to its end in this process.
    pub async fn run(&self, source: WorkflowSource, args: Value) -> Result<RunOutput, Error> {
        self.start(RunRequest::new(source, args))
            .await?
            .join()
            .await
    }

    /// Creates a local run (task + run + attempt 1) and starts executing it.
    pub async fn start(&self, request: RunRequest) -> Result<RunHandle, Error> {
        let provider = self.run_provider(&request);
        if self.shared.provider(&provider).is_none() {
            return Err(Error::Config(format!(
                "unknown agent provider {provider:?}; registered providers: {}",
                self.shared.provider_names().join(", ")
            )));
        }
        let new_run = self.new_run(&request, ClaimScope::Local).await?;
        let created = self.shared.store.create_run(new_run).await?;
        self.launch(created.run, request.source, None, false).await
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
    async fn new_run(&self, request: &RunRequest, scope: ClaimScope) -> Result<NewRun, Error> {
        let shared = &self.shared;
        self.register_owner().await?;
        let meta = shared.scripts.read_metadata(&request.source)?;
        let provider = self.run_provider(request);
        let hash = request.source.content_hash();
        shared.store.put_script(&hash, &request.source.text).await?;
        let mut workflow = WorkflowInfo::new();
        workflow.mode = Some(scope.as_str().to_owned());
        workflow.script_path = Some(request.source.path.display().to_string());
        workflow.script_hash = Some(hash);
        workflow.metadata = serde_json::to_value(&meta).ok();
        workflow.provider = Some(provider);
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
        self.register_owner().await?;
        let run = self.get_run(run_id).await?;
        if !run.is_root() {
            return Err(Error::Config(format!(
                "{run_id} is a child run; resume its root run {}",
                run.root_run_id
            )));
        }
        if run.state == State::Completed {
            return self.completed_handle(run).await;
        }
        let source = match options.source.clone() {
            Some(source) => source,
            None => self.stored_source(&run).await?,
        };
        self.launch(run, source, Some(options), true).await
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
            .ok_or_else(|| Error::Config(format!("run {run_id} has no task {}", run.task_id)))?;
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
        if task.state != State::Running {
            return Ok(false);
        }
        let expired = task
            .lease_expires_at
            .is_none_or(|expires| expires <= self.shared.clock.now_ms());
        if expired {
            return Ok(true);
        }
        match &task.claimed_by_owner_id {
            Some(owner) => self.owner_is_dead(owner).await,
            None => Ok(true),
        }
    }

    /// Deletes a finished root run with its child runs, attempts, steps, ledger rows and
    /// events. A child run is refused (delete its root), and so is a run that has not finished
    /// (cancel it first).
    pub async fn delete(&self, run_id: &str) -> Result<(), Error> {
        let run = self.get_run(run_id).await?;
        if !run.is_root() {
            return Err(Error::Config(format!(
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
        attempt::ledger_usage(self.shared.store.as_ref(), root_run_id).await
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

    async fn get_run(&self, run_id: &str) -> Result<RunRecord, Error> {
        self.shared
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound {
                run_id: run_id.to_owned(),
                store: self.shared.store.describe(),
            })
    }

    async fn register_owner(&self) -> Result<(), Error> {
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

    /// The script of a stored run: re-read from its path so a fixed script can continue a
    /// failed run, else the stored source.
    async fn stored_source(&self, run: &RunRecord) -> Result<WorkflowSource, Error> {
        let path = run.workflow.script_path.clone().unwrap_or_default();
        let path = PathBuf::from(path);
        if let Some(source) = self.shared.workflows_by_path.get(&path) {
            return Ok(source.clone());
        }
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
        Err(Error::Config(format!(
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
            token_usage: attempt::ledger_usage(self.shared.store.as_ref(), &run.run_id).await?,
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

    /// Claims the task (waiting for, or taking over from, a previous owner) and spawns the attempt.
    async fn launch(
        &self,
        run: RunRecord,
        source: WorkflowSource,
        overrides: Option<ResumeOptions>,
        revive: bool,
    ) -> Result<RunHandle, Error> {
        let cancel = self.register_live(&run.run_id)?;
        let claimed = async {
            // Everything that can fail is read before the task is claimed, so a failure here
            // leaves no attempt behind.
            let settings = self.settings(&run, overrides).await?;
            let no_wait = settings.1;
            let attempt = self.claim_task(&run, revive, no_wait, &cancel).await?;
            Ok::<_, Error>((settings.0, attempt))
        }
        .await;
        let (settings, attempt) = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                self.unregister_live(&run.run_id);
                return Err(error);
            }
        };
        Ok(self.spawn_attempt(run, attempt, source, settings, cancel, None))
    }

    /// Marks a run as executing in this engine (so `cancel` reaches it at once); a run already
    /// executing here is `RunBusy`.
    fn register_live(&self, run_id: &str) -> Result<CancellationToken, Error> {
        let shared = &self.shared;
        let mut live = shared
            .live
            .lock()
            .map_err(|_| Error::Config("engine registry poisoned".to_owned()))?;
        if live.contains_key(run_id) {
            return Err(Error::RunBusy {
                run_id: run_id.to_owned(),
                owner: shared.owner_id.clone(),
                lease_expires_at: shared.clock.now_ms(),
            });
        }
        let cancel = CancellationToken::new();
        live.insert(run_id.to_owned(), cancel.clone());
        Ok(cancel)
    }

    fn unregister_live(&self, run_id: &str) {
        if let Ok(mut live) = self.shared.live.lock() {
            live.remove(run_id);
        }
    }

    /// Executes an attempt this engine has opened (the run is registered as live) on its own
    /// task; the run leaves the live registry when the attempt ends.
    fn spawn_attempt(
        &self,
        run: RunRecord,
        attempt: AttemptRecord,
        source: WorkflowSource,
        settings: RunSettings,
        cancel: CancellationToken,
        runner: Option<attempt::RunnerAttempt>,
    ) -> RunHandle {
        let shared = Arc::clone(&self.shared);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let run_id = run.run_id.clone();
        let task_id = run.task_id.clone();
        let span = tracing::info_span!("run", run_id = %run_id, attempt = attempt.attempt);
        let plan = AttemptPlan {
            engine: Arc::clone(&shared),
            run,
            attempt,
            source,
            settings,
            cancel: cancel.clone(),
            handle_events: Some(events_tx),
            runner,
        };
        let registry = Arc::clone(&shared);
        let live_key = run_id.clone();
        let join = tokio::spawn(
            async move {
                let result = attempt::execute(plan).await;
                if let Ok(mut live) = registry.live.lock() {
                    live.remove(&live_key);
                }
                result
            }
            .instrument(span),
        );
        RunHandle {
            run_id,
            task_id,
            cancel,
            events: Some(events_rx),
            join,
        }
    }

    /// The defaults in force for an attempt (stored with the run, overridden on resume) and
    /// whether to refuse rather than wait for another owner.
    async fn settings(
        &self,
        run: &RunRecord,
        overrides: Option<ResumeOptions>,
    ) -> Result<(RunSettings, bool), Error> {
        let shared = &self.shared;
        let overrides = overrides.unwrap_or_default();
        let settings = RunSettings {
            provider: overrides
                .provider
                .or_else(|| run.workflow.provider.clone())
                .unwrap_or_else(|| shared.default_provider.clone()),
            model_map: if run.workflow.model_map.is_empty() {
                shared.model_map.clone()
            } else {
                run.workflow.model_map.clone()
            },
            cwd: match &run.workflow.cwd {
                Some(cwd) => Some(cwd.clone()),
                None => self.recorded_cwd(run).await?,
            },
            budget_total: overrides.budget_total.or(run.budget_total),
            max_parallel_agents: run
                .workflow
                .max_parallel_agents
                .or(shared.limits.max_parallel_agents),
            step_identity: StepIdentity::of_run(
                run.workflow.step_identity,
                run.workflow.script_hash.is_some(),
            ),
        };
        Ok((settings, overrides.no_wait))
    }

    /// Claims the task. A dead owner on this host is taken over at once; a live owner elsewhere
    /// is waited for at most one lease ttl (it may keep renewing), then reported as `RunBusy`.
    async fn claim_task(
        &self,
        run: &RunRecord,
        revive: bool,
        no_wait: bool,
        cancel: &CancellationToken,
    ) -> Result<AttemptRecord, Error> {
        let shared = &self.shared;
        let ttl = i64::try_from(shared.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut take_over_from = None;
        let mut give_up_at = None;
        loop {
            let now = shared.clock.now_ms();
            let started = shared
                .store
                .start_attempt(StartAttempt {
                    attempt_id: crate::new_id("attempt"),
                    task_id: run.task_id.clone(),
                    run_id: run.run_id.clone(),
                    owner_id: shared.owner_id.clone(),
                    lease_expires_at: now.saturating_add(ttl),
                    take_over_from: take_over_from.clone(),
                    revive,
                    now,
                })
                .await?;
            let (owner_id, lease_expires_at) = match started {
                AttemptStart::Started(attempt) => return Ok(attempt),
                AttemptStart::Finished(state) => {
                    return Err(Error::Config(format!(
                        "workflow run {} is {state} and cannot be started again",
                        run.run_id
                    )))
                }
                AttemptStart::Busy {
                    owner_id,
                    lease_expires_at,
                } => (owner_id, lease_expires_at),
            };
            if take_over_from.is_none() && self.owner_is_dead(&owner_id).await? {
                tracing::info!(%owner_id, "previous owner's process is gone; taking over its leases");
                take_over_from = Some(owner_id);
                continue;
            }
            let give_up_at = *give_up_at.get_or_insert(now.saturating_add(ttl));
            if no_wait || now >= give_up_at {
                return Err(Error::RunBusy {
                    run_id: run.run_id.clone(),
                    owner: owner_id,
                    lease_expires_at,
                });
            }
            tracing::info!(%owner_id, lease_expires_at, "waiting for the previous owner's lease to expire");
            let wake = lease_expires_at.saturating_add(1).min(give_up_at);
            tokio::select! {
                () = shared.clock.sleep_until(wake) => {}
                () = cancel.cancelled() => return Err(Error::Cancelled),
            }
        }
    }

    /// smol-wf recorded no cwd with its runs, only inside each agent signature. Runs it wrote
    /// (they have no stored script hash) take the cwd their recorded steps used, so those steps
    /// replay instead of running again.
    async fn recorded_cwd(&self, run: &RunRecord) -> Result<Option<String>, Error> {
        if run.workflow.script_hash.is_some() {
            return Ok(None);
        }
        let steps = self.shared.store.load_steps(&run.run_id).await?;
        Ok(steps
            .iter()
            .filter(|step| step.kind == crate::store::StepKind::Agent)
            .filter_map(|step| serde_json::from_str::<Value>(&step.input_signature_json).ok())
            .find_map(|signature| {
                signature
                    .pointer("/context/cwd")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
    }

    /// True only when the owner ran on this host and its process no longer exists.
    async fn owner_is_dead(&self, owner_id: &str) -> Result<bool, Error> {
        let Some(owner) = self.shared.store.get_owner(owner_id).await? else {
            return Ok(false);
        };
        let here = OwnerRecord::this_process(String::new(), 0);
        if owner.hostname != here.hostname || owner.pid == here.pid {
            return Ok(false);
        }
        Ok(!process_exists(owner.pid))
    }
}

#[cfg(target_os = "linux")]
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_exists(_pid: u32) -> bool {
    // Without a cheap, safe liveness probe, assume alive and let the lease expire.
    true
}
