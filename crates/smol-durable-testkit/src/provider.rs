//! [`ScriptedProvider`]: canned answers, delays, injected failures and call accounting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable_core::{
    AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind, Usage,
};

type Hook = Arc<dyn Fn(&AgentRequest) + Send + Sync>;
type Responder = Arc<dyn Fn(&AgentRequest) -> Option<Value> + Send + Sync>;

#[derive(Default)]
struct Rules {
    outputs: HashMap<String, Value>,
    delays: HashMap<String, Duration>,
    default_delay: Option<Duration>,
    failures: HashMap<String, (usize, ProviderErrorKind, Option<Usage>)>,
    usage: Option<Usage>,
    hook: Option<Hook>,
    responder: Option<Responder>,
}

/// One recorded provider call.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The request.
    pub request: AgentRequest,
    /// When it started.
    pub started: Instant,
    /// When it ended (None while in flight or if dropped).
    pub ended: Option<Instant>,
}

/// A deterministic provider for tests.
///
/// By default every call answers `"echo: <prompt>"` with session id `session-<n>`, a `raw`
/// transcript, and usage of 1 input and 1 output token. Per-prompt rules override that.
pub struct ScriptedProvider {
    name: String,
    rules: Mutex<Rules>,
    calls: Mutex<Vec<RecordedCall>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl std::fmt::Debug for ScriptedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedProvider")
            .field("name", &self.name)
            .field("calls", &self.call_count())
            .finish()
    }
}

impl ScriptedProvider {
    /// A provider registered under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rules: Mutex::new(Rules::default()),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn with_rules(self, change: impl FnOnce(&mut Rules)) -> Self {
        if let Ok(mut rules) = self.rules.lock() {
            change(&mut rules);
        }
        self
    }

    /// Answers `prompt` with `output`.
    pub fn with_output(self, prompt: impl Into<String>, output: Value) -> Self {
        self.with_rules(|rules| {
            rules.outputs.insert(prompt.into(), output);
        })
    }

    /// Delays answers to `prompt`.
    pub fn with_delay(self, prompt: impl Into<String>, delay: Duration) -> Self {
        self.with_rules(|rules| {
            rules.delays.insert(prompt.into(), delay);
        })
    }

    /// Delays every answer without a per-prompt delay.
    pub fn with_default_delay(self, delay: Duration) -> Self {
        self.with_rules(|rules| rules.default_delay = Some(delay))
    }

    /// The first `times` calls for `prompt` fail with `kind` (reporting `usage`, if given).
    pub fn fail_first(
        self,
        prompt: impl Into<String>,
        times: usize,
        kind: ProviderErrorKind,
        usage: Option<Usage>,
    ) -> Self {
        self.with_rules(|rules| {
            rules.failures.insert(prompt.into(), (times, kind, usage));
        })
    }

    /// Usage reported by successful calls.
    pub fn with_usage(self, usage: Usage) -> Self {
        self.with_rules(|rules| rules.usage = Some(usage))
    }

    /// Computes outputs: `responder` returns the output for a request, or `None` to fall back to
    /// the per-prompt outputs and the echo.
    pub fn with_responder(
        self,
        responder: impl Fn(&AgentRequest) -> Option<Value> + Send + Sync + 'static,
    ) -> Self {
        self.with_rules(|rules| rules.responder = Some(Arc::new(responder)))
    }

    /// Runs `hook` at the start of every call (e.g. to cancel the run mid-call).
    pub fn on_call(self, hook: impl Fn(&AgentRequest) + Send + Sync + 'static) -> Self {
        self.with_rules(|rules| rules.hook = Some(Arc::new(hook)))
    }

    /// Every call so far, in start order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Number of calls started.
    pub fn call_count(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Number of calls started for `prompt`.
    pub fn calls_for(&self, prompt: &str) -> usize {
        self.calls
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|call| call.request.prompt == prompt)
                    .count()
            })
            .unwrap_or(0)
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

struct InFlight<'a>(&'a ScriptedProvider, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut calls) = self.0.calls.lock() {
            if let Some(call) = calls.get_mut(self.1) {
                call.ended = Some(Instant::now());
            }
        }
    }
}

#[async_trait]
impl AgentProvider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let index = {
            let mut calls = self
                .calls
                .lock()
                .map_err(|_| ProviderError::terminal("poisoned"))?;
            calls.push(RecordedCall {
                request: request.clone(),
                started: Instant::now(),
                ended: None,
            });
            calls.len() - 1
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _in_flight = InFlight(self, index);
        let (output, delay, failure, usage, hook, responder) = {
            let mut rules = self
                .rules
                .lock()
                .map_err(|_| ProviderError::terminal("poisoned"))?;
            let failure = match rules.failures.get_mut(&request.prompt) {
                Some((remaining, kind, usage)) if *remaining > 0 => {
                    *remaining -= 1;
                    Some((*kind, usage.clone()))
                }
                _ => None,
            };
            (
                rules.outputs.get(&request.prompt).cloned(),
                rules
                    .delays
                    .get(&request.prompt)
                    .copied()
                    .or(rules.default_delay),
                failure,
                rules.usage.clone().unwrap_or_else(|| Usage::tokens(1, 1)),
                rules.hook.clone(),
                rules.responder.clone(),
            )
        };
        if let Some(hook) = hook {
            hook(&request);
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some((kind, usage)) = failure {
            let error =
                ProviderError::new(kind, format!("scripted failure for {:?}", request.prompt));
            return Err(match usage {
                Some(usage) => error.with_usage(usage),
                None => error,
            });
        }
        let output = responder
            .and_then(|responder| responder(&request))
            .or(output)
            .unwrap_or_else(|| json!(format!("echo: {}", request.prompt)));
        Ok(AgentResponse::new(output)
            .with_session_id(format!("session-{}", index + 1))
            .with_model("scripted-model")
            .with_usage(usage)
            .with_raw(json!({ "events": [{ "prompt": request.prompt, "call": index + 1 }] })))
    }
}
