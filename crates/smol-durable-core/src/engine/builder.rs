//! [`EngineBuilder`]: how an [`Engine`] is put together.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handle::Engine;
use super::shared::EngineShared;
use crate::clock::{Clock, SystemClock};
use crate::decide::RetryPolicy;
use crate::events::{EventSink, SessionLogSink};
use crate::limits::Limits;
use crate::script::{ScriptEngine, ScriptInvocation, WorkflowMeta, WorkflowSource};
use crate::store::{DurableStore, RetryingStore};
use crate::{AgentProvider, Error, ScriptError, ScriptErrorKind};
use serde_json::Value;

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
    default_agent_retry: RetryPolicy,
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

    /// How an agent call that sets no `retry` option is tried (default: once). A call's own
    /// `retry: {maxAttempts, backoffMs}` replaces it. Only transient and rate-limited failures
    /// are tried again, after the backoff or the provider's `retry_after` when longer (see
    /// [`RetryPolicy::next_try_in`]); without retries, a transient failure inside `parallel`
    /// becomes `null` there.
    pub fn default_agent_retry(mut self, retry: RetryPolicy) -> Self {
        self.default_agent_retry = RetryPolicy {
            max_tries: retry.max_tries.max(1),
            ..retry
        };
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
    pub fn build(mut self) -> Result<Engine, Error> {
        let scripts = self.scripts.take().ok_or_else(|| {
            Error::InvalidRequest("EngineBuilder needs a script engine".to_owned())
        })?;
        self.assemble(scripts, true)
    }

    /// Builds an engine for a process that only queues and follows runs: [`Engine::submit`],
    /// [`Engine::wait`], [`Engine::follow_events`], [`Engine::cancel`], [`Engine::status`],
    /// listing and deleting. It needs a store only: no provider, no script engine. It cannot
    /// execute runs: `run`, `start`, `resume` and `worker` fail with
    /// [`Error::InvalidRequest`]. Submitted runs record no metadata (`meta` is read by the
    /// worker that runs them) and, unless the request names one, no provider: the worker's
    /// default provider runs them.
    pub fn build_submitter(mut self) -> Result<Engine, Error> {
        if !self.providers.is_empty() || self.scripts.is_some() {
            return Err(Error::InvalidRequest(
                "a submitter engine executes nothing: register no provider or script engine \
                 (use build() for an engine that runs workflows)"
                    .to_owned(),
            ));
        }
        self.default_provider = None;
        self.assemble(Arc::new(NoScripts), false)
    }

    fn assemble(self, scripts: Arc<dyn ScriptEngine>, executes: bool) -> Result<Engine, Error> {
        let store = self
            .store
            .ok_or_else(|| Error::InvalidRequest("EngineBuilder needs a store".to_owned()))?;
        let mut providers = BTreeMap::new();
        for provider in &self.providers {
            let name = provider.name().to_owned();
            if providers
                .insert(name.clone(), Arc::clone(provider))
                .is_some()
            {
                return Err(Error::InvalidRequest(format!(
                    "provider {name:?} registered twice"
                )));
            }
        }
        let default_provider = match self.default_provider {
            Some(name) if providers.contains_key(&name) => name,
            Some(name) => {
                return Err(Error::InvalidRequest(format!(
                    "default provider {name:?} is not registered"
                )))
            }
            None if !executes => String::new(),
            None => self
                .providers
                .first()
                .map(|provider| provider.name().to_owned())
                .ok_or_else(|| {
                    Error::InvalidRequest("EngineBuilder needs at least one provider".to_owned())
                })?,
        };
        let lease_ttl = self.lease_ttl.unwrap_or(Duration::from_secs(60));
        if lease_ttl < Duration::from_millis(3) {
            return Err(Error::InvalidRequest(
                "lease ttl must be at least 3 ms".to_owned(),
            ));
        }
        let workflows_by_path = self
            .named_workflows
            .values()
            .map(|source| (source.path.clone(), source.clone()))
            .collect();
        let store: Arc<dyn DurableStore> =
            Arc::new(RetryingStore::new(store, self.limits.store_retry));
        Ok(Engine::from_shared(Arc::new(EngineShared {
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
            default_agent_retry: self.default_agent_retry,
            executes,
            signal_bell: tokio::sync::Notify::new(),
        })))
    }
}

/// The script engine of a submitter engine, which executes nothing: never called, since the
/// engine refuses to execute before reaching it.
#[derive(Debug)]
struct NoScripts;

#[async_trait::async_trait]
impl ScriptEngine for NoScripts {
    fn read_metadata(&self, _source: &WorkflowSource) -> Result<WorkflowMeta, ScriptError> {
        Err(ScriptError::new(ScriptErrorKind::Internal, SUBMITTER))
    }

    async fn evaluate(&self, _invocation: ScriptInvocation) -> Result<Value, ScriptError> {
        Err(ScriptError::new(ScriptErrorKind::Internal, SUBMITTER))
    }
}

/// Why a submitter engine refuses to execute.
pub(super) const SUBMITTER: &str = "this engine was built with EngineBuilder::build_submitter: \
     it queues and follows runs but executes none (run workers with an engine from build())";

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }
}
