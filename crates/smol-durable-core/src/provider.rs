//! The agent provider contract: one call in, one result (or classified error) out.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ProviderError;

/// Token usage as a provider reports it (smol-wf's `AgentUsage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens (not counting cache reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Generated tokens: what the budget counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Total, when reported separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// What the call cost, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<UsageCost>,
}

impl Usage {
    /// Usage with the given input and output tokens (total = sum).
    pub fn tokens(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            total_tokens: Some(input_tokens.saturating_add(output_tokens)),
            ..Self::default()
        }
    }

    /// A stored usage document, read field by field: a field of another shape (whoever wrote
    /// the row) counts as absent instead of making the whole row unreadable.
    pub fn from_stored(stored: &serde_json::Value) -> Self {
        let count = |name: &str| stored.get(name).and_then(serde_json::Value::as_u64);
        Self {
            input_tokens: count("inputTokens"),
            output_tokens: count("outputTokens"),
            total_tokens: count("totalTokens"),
            cache_read_tokens: count("cacheReadTokens"),
            cache_write_tokens: count("cacheWriteTokens"),
            cost: stored
                .get("cost")
                .and_then(|cost| serde_json::from_value(cost.clone()).ok()),
        }
    }

    /// Sets the cost.
    pub fn with_cost(mut self, cost: UsageCost) -> Self {
        self.cost = Some(cost);
        self
    }

    /// The total as smol-wf's `history` counts it: `totalTokens` when reported, else input,
    /// cache reads and output added up.
    pub fn total(&self) -> u64 {
        self.total_tokens.unwrap_or_else(|| {
            [
                self.input_tokens,
                self.cache_read_tokens,
                self.output_tokens,
            ]
            .into_iter()
            .flatten()
            .fold(0, u64::saturating_add)
        })
    }
}

/// What an agent call cost (smol-wf's `AgentUsageCost`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCost {
    /// For the prompt, when the provider breaks the cost down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// For the output, when the provider breaks the cost down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// For cache reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// For cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// In all.
    pub total: f64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
}

impl UsageCost {
    /// Nothing, in US dollars (what the offline `debug` provider costs).
    pub fn free() -> Self {
        Self {
            input: Some(0.0),
            output: Some(0.0),
            ..Self::usd(0.0)
        }
    }

    /// A total in US dollars, not broken down (what Claude Code and opencode report).
    pub fn usd(total: f64) -> Self {
        Self {
            input: None,
            output: None,
            cache_read: None,
            cache_write: None,
            total,
            currency: "USD".to_owned(),
        }
    }
}

/// Where an agent call comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentContext {
    /// The phase the call belongs to.
    pub phase: Option<String>,
    /// The run's working directory.
    pub cwd: Option<String>,
}

/// One agent call as the provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRequest {
    /// The prompt (for a schema retry, with the validation errors appended).
    pub prompt: String,
    /// Effective options (model already mapped; `phase`/`provider` removed); `null` when none.
    pub options: Value,
    /// Phase and working directory.
    pub context: AgentContext,
    /// Run making the call.
    pub run_id: String,
    /// Durable step of the call. Stable across repeats of the call once it was claimed: a
    /// call that ended (or was interrupted) within
    /// [`Limits::deferred_claim`](crate::Limits::deferred_claim) was never claimed, and a repeat
    /// of it gets a new step id.
    pub step_id: String,
    /// The step's fence: 1 on the first claim, more after reclaims. In JSON it keeps the name
    /// `attempt` that the command provider's protocol has used since 0.1.0.
    #[serde(rename = "attempt")]
    pub fence: u32,
    /// Where the provider reports what the agent does while the call runs (never serialised).
    #[serde(skip)]
    pub events: AgentEvents,
}

/// One thing an agent did while a call ran: a line a coding-agent CLI printed, a streamed chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// The provider's own event, as it printed it (becomes `data.providerEvent`).
    pub provider_event: Value,
    /// The provider's session, once known.
    pub session_id: Option<String>,
    /// A one-line summary of what the agent is doing (`Bash: cargo test`, `edit src/lib.rs`),
    /// for progress displays; `None` for events that are not an action.
    pub action: Option<String>,
}

impl AgentEvent {
    /// An event carrying `provider_event`, no session yet, no action.
    pub fn new(provider_event: Value) -> Self {
        Self {
            provider_event,
            session_id: None,
            action: None,
        }
    }

    /// Sets the session id.
    pub fn with_session_id(mut self, session_id: Option<&str>) -> Self {
        self.session_id = session_id.map(str::to_owned);
        self
    }

    /// Sets the action summary.
    pub fn with_action(mut self, action: Option<String>) -> Self {
        self.action = action;
        self
    }
}

/// Where a provider reports [`AgentEvent`]s while a call runs. The engine turns each one into
/// a `workflow.agent_event` event at once (stored, size-capped, and delivered to sinks), so
/// `events --follow` and progress displays see a long call as it happens.
///
/// Cheap to clone; [`send`](Self::send) never blocks and never fails. A request made outside
/// an engine (`AgentRequest::new`) carries a handle that drops every event.
#[derive(Clone, Default)]
pub struct AgentEvents(Option<Arc<dyn Fn(AgentEvent) + Send + Sync>>);

impl AgentEvents {
    /// A handle that calls `receive` for every event (the engine's, or a test's).
    pub fn new(receive: impl Fn(AgentEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(receive)))
    }

    /// Reports one event.
    pub fn send(&self, event: AgentEvent) {
        if let Some(receive) = &self.0 {
            receive(event);
        }
    }
}

impl std::fmt::Debug for AgentEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AgentEvents(receiving)"
        } else {
            "AgentEvents(dropping)"
        })
    }
}

/// Two handles are equal when they deliver to the same receiver (or both drop).
impl PartialEq for AgentEvents {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl AgentRequest {
    /// A request for `prompt` with no options, outside any run (empty ids, fence 1): what a
    /// provider's own tests start from.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            options: Value::Null,
            context: AgentContext::default(),
            run_id: String::new(),
            step_id: String::new(),
            fence: 1,
            events: AgentEvents::default(),
        }
    }

    /// The `model` option, if any.
    pub fn model(&self) -> Option<&str> {
        self.options.get("model").and_then(Value::as_str)
    }
}

/// What a provider returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentResponse {
    /// The value `agent()` resolves to.
    pub output: Value,
    /// Provider session, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Isolation details (sandbox, worktree), provider-defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Value>,
    /// The full transcript; goes to the session-log sink and events, never to the step row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

impl AgentResponse {
    /// A response carrying just an output.
    pub fn new(output: Value) -> Self {
        Self {
            output,
            ..Self::default()
        }
    }

    /// Sets usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets the session id.
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets the raw transcript.
    pub fn with_raw(mut self, raw: Value) -> Self {
        self.raw = Some(raw);
        self
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The copy that is stored with the step: everything but `raw`.
    pub fn without_raw(&self) -> Self {
        Self {
            raw: None,
            ..self.clone()
        }
    }

    /// Output tokens, 0 when unreported.
    pub fn output_tokens(&self) -> u64 {
        self.usage
            .as_ref()
            .and_then(|usage| usage.output_tokens)
            .unwrap_or(0)
    }
}

/// Runs agent calls. Implement this to plug any model, CLI or service into the engine.
///
/// A provider is called at most once per claimed step try; the engine handles durability,
/// retries (per the call's `retry` option, for [retryable](ProviderError::is_retryable) errors),
/// budget and cancellation (by dropping the future: a provider that spawns processes should
/// kill them on drop).
///
/// ```
/// use async_trait::async_trait;
/// use smol_durable_core::{AgentProvider, AgentRequest, AgentResponse, ProviderError, Usage};
///
/// #[derive(Debug)]
/// struct Shout;
///
/// #[async_trait]
/// impl AgentProvider for Shout {
///     fn name(&self) -> &str {
///         "shout"
///     }
///     async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
///         let text = request.prompt.to_uppercase();
///         Ok(AgentResponse::new(text.into()).with_usage(Usage::tokens(1, 1)))
///     }
/// }
/// ```
#[async_trait]
pub trait AgentProvider: Send + Sync + std::fmt::Debug {
    /// The name scripts select it by (`agent(p, {provider: NAME})`); part of step signatures.
    fn name(&self) -> &str;

    /// Performs one call.
    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError>;
}
