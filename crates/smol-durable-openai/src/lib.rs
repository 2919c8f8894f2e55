//! An [`AgentProvider`] for any OpenAI-compatible Chat Completions endpoint (OpenAI, and the
//! many servers that speak its API).
//!
//! ```no_run
//! # fn main() -> Result<(), smol_durable_core::Error> {
//! use std::sync::Arc;
//! use smol_durable_core::{Engine, MemoryStore};
//! use smol_durable_openai::OpenAiProvider;
//!
//! // OPENAI_BASE_URL (default https://api.openai.com/v1), OPENAI_API_KEY, OPENAI_MODEL.
//! let provider = OpenAiProvider::from_env();
//! let builder = Engine::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .provider(Arc::new(provider));
//! # Ok(())
//! # }
//! ```
//!
//! Each `agent(prompt, options)` call is one user message. The `model` option (after the
//! engine's model map) picks the model, else the provider's default. A `schema` option asks for
//! structured output (`response_format: json_schema`); the engine validates the answer. Usage
//! (`prompt_tokens`, `completion_tokens`) goes to the budget ledger. HTTP 429 and 5xx answers,
//! timeouts and connection failures are retried with exponential backoff, honouring
//! `Retry-After`; a cancelled run drops the request.
#![deny(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable_core::{
    AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind, Usage,
};

/// The OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    name: String,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    default_model: Option<String>,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
}

impl OpenAiProvider {
    /// The name scripts and the CLI select it by, unless renamed.
    pub const NAME: &'static str = "openai";

    /// A provider for the API under `base_url` (`…/v1`); two-minute timeout, three retries.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        Self {
            name: Self::NAME.to_owned(),
            client: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            default_model: None,
            timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff: Duration::from_millis(500),
        }
    }

    /// From `OPENAI_BASE_URL` (default `https://api.openai.com/v1`), `OPENAI_API_KEY` and
    /// `OPENAI_MODEL` (the default model).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let mut provider = Self::new(
            var("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".to_owned()),
            var("OPENAI_API_KEY"),
        );
        provider.default_model = var("OPENAI_MODEL");
        provider
    }

    /// The model used when a call names none.
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Each HTTP request may take this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries of 429, 5xx, timeouts and connection failures, and the first backoff (doubled
    /// each time, unless the server sends `Retry-After`).
    pub fn retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.max_retries = max_retries;
        self.backoff = backoff;
        self
    }

    /// Registers the provider under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn body(&self, request: &AgentRequest) -> Result<Value, ProviderError> {
        let model = request
            .model()
            .map(str::to_owned)
            .or_else(|| self.default_model.clone())
            .ok_or_else(|| {
                ProviderError::terminal(
                    "no model for the openai provider: pass {model: \"…\"} to agent() or set OPENAI_MODEL",
                )
            })?;
        let mut body = json!({
            "model": model,
            "messages": [{ "role": "user", "content": request.prompt }],
        });
        if let Some(schema) = request.options.get("schema") {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": "output", "schema": schema },
            });
        }
        Ok(body)
    }

    /// One HTTP exchange: the response, or an error and how long the server asked us to wait.
    async fn attempt(&self, body: &Value) -> Result<AgentResponse, (ProviderError, Option<u64>)> {
        let mut http = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .timeout(self.timeout)
            .json(body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|error| {
            let message = if error.is_timeout() {
                format!(
                    "the request timed out after {} s",
                    self.timeout.as_secs_f64()
                )
            } else {
                format!("cannot reach {}: {error}", self.base_url)
            };
            (ProviderError::transient(message).with_source(error), None)
        })?;
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(smol_durable_core::http::retry_after_ms);
        let text = response.text().await.map_err(|error| {
            (
                ProviderError::transient(format!("the response was cut off: {error}"))
                    .with_source(error),
                None,
            )
        })?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            let message = format!("the API answered {status}: {detail}");
            let error =
                smol_durable_core::http::status_error(status.as_u16(), message, retry_after_ms);
            return Err((error, retry_after_ms));
        }
        parse(&text).map_err(|error| (error, None))
    }
}

/// A Chat Completions response as an agent result.
fn parse(text: &str) -> Result<AgentResponse, ProviderError> {
    let invalid = |why: &str| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            format!("the API's answer is not a chat completion: {why}"),
        )
    };
    let raw: Value = serde_json::from_str(text).map_err(|_| invalid("not JSON"))?;
    let content = raw["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| invalid("no choices[0].message.content"))?;
    let mut response = AgentResponse::new(Value::String(content.to_owned()));
    let tokens = |key: &str| raw["usage"][key].as_u64();
    if let (Some(input), Some(output)) = (tokens("prompt_tokens"), tokens("completion_tokens")) {
        let mut usage = Usage::tokens(input, output);
        usage.total_tokens = tokens("total_tokens").or(usage.total_tokens);
        response.usage = Some(usage);
    }
    response.model = raw["model"].as_str().map(str::to_owned);
    response.session_id = raw["id"].as_str().map(str::to_owned);
    response.raw = Some(raw);
    Ok(response)
}

#[async_trait]
impl AgentProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let body = self.body(&request)?;
        smol_durable_core::http::with_retries(self.max_retries, self.backoff, || {
            self.attempt(&body)
        })
        .await
    }
}
