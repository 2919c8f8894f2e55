//! A [`ScriptEngine`] whose workflows are Rust async closures.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use smol_durable_core::{
    BudgetSnapshot, HostError, HostFuture, HostRequest, ScriptEngine, ScriptError, ScriptErrorKind,
    ScriptInvocation, WorkflowHost, WorkflowMeta, WorkflowSource,
};

type WorkflowFn =
    Arc<dyn Fn(ScriptCtx) -> BoxFuture<'static, Result<Value, ScriptError>> + Send + Sync>;

#[derive(Clone)]
struct Entry {
    meta: WorkflowMeta,
    run: WorkflowFn,
}

/// Workflows written as Rust closures over [`ScriptCtx`], keyed by path. Cloning shares the
/// registry, so a test can replace a workflow (an "edited script") between run and resume.
#[derive(Clone, Default)]
pub struct ScriptedEngine {
    workflows: Arc<Mutex<HashMap<PathBuf, Entry>>>,
}

impl std::fmt::Debug for ScriptedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<PathBuf> = self
            .workflows
            .lock()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ScriptedEngine")
            .field("workflows", &paths)
            .finish()
    }
}

impl ScriptedEngine {
    /// No workflows yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the workflow at `path`, with metadata named after the path.
    pub fn workflow<F, Fut>(self, path: impl Into<PathBuf>, run: F) -> Self
    where
        F: Fn(ScriptCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ScriptError>> + Send + 'static,
    {
        let path = path.into();
        let meta = WorkflowMeta::new(path.display().to_string(), "scripted workflow");
        self.workflow_with_meta(path, meta, run)
    }

    /// Registers (or replaces) a workflow with explicit metadata (phases with defaults, …).
    pub fn workflow_with_meta<F, Fut>(
        self,
        path: impl Into<PathBuf>,
        meta: WorkflowMeta,
        run: F,
    ) -> Self
    where
        F: Fn(ScriptCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ScriptError>> + Send + 'static,
    {
        let entry = Entry {
            meta,
            run: Arc::new(move |ctx| run(ctx).boxed()),
        };
        if let Ok(mut map) = self.workflows.lock() {
            map.insert(path.into(), entry);
        }
        self
    }

    /// The [`WorkflowSource`] to pass to the engine for `path`. Its text names the path, so two
    /// scripted workflows never share a content hash.
    pub fn source(&self, path: impl Into<PathBuf>) -> WorkflowSource {
        let path = path.into();
        let text = format!("// scripted workflow {}", path.display());
        WorkflowSource::inline(path, text)
    }

    fn entry(&self, source: &WorkflowSource) -> Result<Entry, ScriptError> {
        self.workflows
            .lock()
            .ok()
            .and_then(|map| map.get(&source.path).cloned())
            .ok_or_else(|| {
                ScriptError::new(
                    ScriptErrorKind::Import,
                    format!("no scripted workflow at {}", source.path.display()),
                )
            })
    }
}

#[async_trait]
impl ScriptEngine for ScriptedEngine {
    fn read_metadata(&self, source: &WorkflowSource) -> Result<WorkflowMeta, ScriptError> {
        Ok(self.entry(source)?.meta)
    }

    async fn evaluate(&self, invocation: ScriptInvocation) -> Result<Value, ScriptError> {
        let entry = self.entry(&invocation.source)?;
        let ctx = ScriptCtx {
            host: invocation.host,
            args: invocation.args,
            run_id: invocation.run_id,
            phase: Arc::default(),
        };
        (entry.run)(ctx).await
    }
}

/// What a scripted workflow can do: the globals of a JavaScript workflow.
///
/// Every method makes its host call **when called**, like a script does, so
/// `futures::join!(ctx.agent(a), ctx.agent(b))` runs both concurrently with deterministic
/// occurrence numbering.
#[derive(Debug, Clone)]
pub struct ScriptCtx {
    host: Arc<dyn WorkflowHost>,
    args: Value,
    run_id: String,
    /// The last `phase()`, shared by every clone (one branch, as a script without `parallel`).
    phase: Arc<std::sync::Mutex<Option<String>>>,
}

impl ScriptCtx {
    /// `args`.
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// `runId` from `workflow:extra`: the run being evaluated.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Any host call.
    pub fn call(&self, request: HostRequest) -> HostFuture {
        self.host.call(request)
    }

    /// `agent(prompt, options)`.
    pub fn agent(&self, prompt: impl Into<String>, options: Value) -> HostFuture {
        let phase = self.phase.lock().ok().and_then(|phase| phase.clone());
        self.call(HostRequest::Agent {
            prompt: prompt.into(),
            options,
            phase,
        })
    }

    /// `sleep(ms)` from `workflow:extra`.
    pub fn sleep(&self, duration_ms: u64) -> HostFuture {
        self.call(HostRequest::Sleep { duration_ms })
    }

    /// `waitFor(name, options)` from `workflow:extra`.
    pub fn wait_for(&self, name: impl Into<String>, options: Value) -> HostFuture {
        self.call(HostRequest::Wait {
            names: vec![name.into()],
            options,
            any: false,
        })
    }

    /// `waitForAny(names, options)` from `workflow:extra`.
    pub fn wait_for_any(&self, names: &[&str], options: Value) -> HostFuture {
        self.call(HostRequest::Wait {
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            options,
            any: true,
        })
    }

    /// `signal(runId, name, payload)` from `workflow:extra`.
    pub fn signal(
        &self,
        run_id: impl Into<String>,
        name: impl Into<String>,
        payload: Value,
    ) -> HostFuture {
        self.call(HostRequest::Signal {
            run_id: run_id.into(),
            name: name.into(),
            payload,
        })
    }

    /// `workflow(ref, args)`.
    pub fn workflow(&self, reference: Value, args: Value) -> HostFuture {
        self.call(HostRequest::Workflow { reference, args })
    }

    /// `log(message)`.
    pub fn log(&self, message: impl Into<String>) {
        drop(self.call(HostRequest::Log {
            values: vec![Value::String(message.into())],
        }));
    }

    /// `phase(name)`: the phase of the agent calls made after it.
    pub fn phase(&self, name: impl Into<String>) {
        let name = name.into();
        if let Ok(mut phase) = self.phase.lock() {
            *phase = Some(name.clone());
        }
        drop(self.call(HostRequest::Phase {
            name,
            options: None,
        }));
    }

    /// `budget`.
    pub fn budget(&self) -> BudgetSnapshot {
        self.host.budget()
    }

    /// `parallel(thunks)`: runs all concurrently; a failing one yields `null`.
    pub async fn parallel(&self, calls: Vec<HostFuture>) -> Vec<Value> {
        futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|result: Result<Value, HostError>| result.unwrap_or(Value::Null))
            .collect()
    }
}
