//! What every run of an engine shares: its store, script engine, providers, limits and clock,
//! and the registry of runs executing in this process.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::{EventSink, SessionLogSink};
use crate::limits::Limits;
use crate::script::{ScriptEngine, WorkflowSource};
use crate::store::DurableStore;
use crate::AgentProvider;

/// Distinct scripts an engine remembers; one serving more starts its cache over.
const CACHED_SCRIPTS: usize = 256;

/// Configuration and services shared by every run of an engine.
#[derive(Debug)]
pub(crate) struct EngineShared {
    pub store: Arc<dyn DurableStore>,
    pub scripts: Arc<dyn ScriptEngine>,
    pub providers: BTreeMap<String, Arc<dyn AgentProvider>>,
    pub default_provider: String,
    pub model_map: BTreeMap<String, String>,
    pub limits: Limits,
    pub lease_ttl: Duration,
    pub clock: Arc<dyn Clock>,
    pub event_sinks: Vec<Arc<dyn EventSink>>,
    pub session_sink: Option<Arc<dyn SessionLogSink>>,
    pub named_workflows: HashMap<String, WorkflowSource>,
    pub workflows_by_path: HashMap<PathBuf, WorkflowSource>,
    pub owner_id: String,
    /// Runs executing in this engine, by root run id, with the token that cancels them.
    pub live: Mutex<HashMap<String, CancellationToken>>,
    pub owner_registered: tokio::sync::OnceCell<()>,
    /// Sources this engine stored or read by content hash: stored scripts are immutable and
    /// never deleted, so an entry is never stale and its script need not be stored again.
    pub scripts_by_hash: Mutex<HashMap<String, String>>,
    /// How agent calls that set no `retry` are tried.
    pub default_agent_retry: crate::decide::RetryPolicy,
    /// False for a submitter engine ([`EngineBuilder::build_submitter`](crate::EngineBuilder::build_submitter)), which executes no
    /// run.
    pub executes: bool,
    /// Rung when this engine stores a signal, so its own waits look at once (other
    /// processes' signals reach them through [`DurableStore::signal_sent`] or their poll).
    pub signal_bell: tokio::sync::Notify,
}

impl EngineShared {
    /// Refuses to execute in a submitter engine.
    pub fn check_executes(&self) -> Result<(), crate::Error> {
        if self.executes {
            Ok(())
        } else {
            Err(crate::Error::InvalidRequest(
                super::builder::SUBMITTER.to_owned(),
            ))
        }
    }

    /// The source stored under `hash`, when this engine stored or read it before.
    pub fn known_script(&self, hash: &str) -> Option<String> {
        self.scripts_by_hash
            .lock()
            .ok()
            .and_then(|cache| cache.get(hash).cloned())
    }

    /// Remembers that the store holds `text` under `hash` (a bounded cache: cleared when full).
    pub fn remember_script(&self, hash: &str, text: &str) {
        if let Ok(mut cache) = self.scripts_by_hash.lock() {
            if cache.len() >= CACHED_SCRIPTS {
                cache.clear();
            }
            cache.insert(hash.to_owned(), text.to_owned());
        }
    }

    pub fn provider(&self, name: &str) -> Option<Arc<dyn AgentProvider>> {
        self.providers.get(name).cloned()
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }

    /// Refuses a default provider this engine does not have, before a run is created with it.
    pub fn check_provider(&self, name: &str) -> Result<(), crate::Error> {
        if self.provider(name).is_some() {
            return Ok(());
        }
        Err(crate::Error::InvalidRequest(format!(
            "unknown agent provider {name:?}; registered providers: {}",
            self.provider_names().join(", ")
        )))
    }
}
