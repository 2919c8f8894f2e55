//! An [`AgentProvider`] for Anthropic's Messages API (`POST /v1/messages`).
//!
//! ```no_run
//! # fn main() -> Result<(), smol_durable_core::Error> {
//! use std::sync::Arc;
//! use smol_durable_core::{Engine, MemoryStore};
//! use smol_durable_anthropic::AnthropicProvider;
//!
//! // ANTHROPIC_BASE_URL (default https://api.anthropic.com), ANTHROPIC_API_KEY, ANTHROPIC_MODEL.
//! let provider = AnthropicProvider::from_env();
//! let builder = Engine::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .provider(Arc::new(provider));
//! # Ok(())
//! # }
//! ```
//!
//! Each `agent(prompt, options)` call is one user message. The `model` option (after the
//! engine's model map) picks the model, else the provider's default; a positive integer
//! `maxTokens` option caps the answer, else the provider's default (4096). A `schema` option
//! asks for structured output (`output_config: {format: {type: "json_schema"}}`): the answer is
//! parsed as JSON and the engine validates it. A refusal, and a structured answer cut off at
//! `max_tokens`, are terminal errors. Usage (`input_tokens`, `output_tokens`, cache writes and
//! reads) goes to the budget ledger. HTTP 429, 529 (overloaded) and 5xx answers, timeouts and
//! connection failures are retried with exponential backoff, honouring `retry-after`; a
//! cancelled run drops the request.
#![deny(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable_core::{
    AgentProvider, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind, Usage,
};

/// The Messages API version sent in `anthropic-version`.
const API_VERSION: &str = "2023-06-01";

/// The Anthropic Messages API provider.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    name: String,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    default_model: Option<String>,
    max_tokens: u64,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
}

impl AnthropicProvider {
    /// The name scripts and the CLI select it by, unless renamed.
    pub const NAME: &'static str = "anthropic";

    /// A provider for the API under `base_url` (without `/v1`); answers of at most 4096 tokens,
    /// two-minute timeout, three retries.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        Self {
            name: Self::NAME.to_owned(),
            client: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            default_model: None,
            max_tokens: 4096,
            timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff: Duration::from_millis(500),
        }
    }

    /// From `ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`), `ANTHROPIC_API_KEY` and
    /// `ANTHROPIC_MODEL` (the default model).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let mut provider = Self::new(
            var("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".to_owned()),
            var("ANTHROPIC_API_KEY"),
        );
        provider.default_model = var("ANTHROPIC_MODEL");
        provider
    }

    /// The model used when a call names none.
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// The `max_tokens` sent when a call has no `maxTokens` option (at least 1).
    pub fn max_tokens(mut self, max_tokens: u64) -> Self {
        self.max_tokens = max_tokens.max(1);
        self
    }

    /// Each HTTP request may take this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries of 429, 529, 5xx, timeouts and connection failures, and the first backoff
    /// (doubled each time, unless the server sends `retry-after`).
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
                    "no model for the anthropic provider: pass {model: \"…\"} to agent() or set ANTHROPIC_MODEL",
                )
            })?;
        let max_tokens = request
            .options
            .get("maxTokens")
            .and_then(|value| {
                // Script numbers may arrive as floats: 1024.0 counts, 1024.5 does not.
                value.as_u64().or_else(|| {
                    value
                        .as_f64()
                        .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= u32::MAX as f64)
                        .map(|n| n as u64)
                })
            })
            .filter(|n| *n > 0)
            .unwrap_or(self.max_tokens);
        let mut body = json!({
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{ "role": "user", "content": request.prompt }],
        });
        if let Some(schema) = request
            .options
            .get("schema")
            .filter(|schema| !schema.is_null())
        {
            body["output_config"] =
                json!({ "format": { "type": "json_schema", "schema": schema } });
        }
        Ok(body)
    }

    /// One HTTP exchange: the response, or an error and how long the server asked us to wait.
    async fn attempt(
        &self,
        body: &Value,
        structured: bool,
    ) -> Result<AgentResponse, (ProviderError, Option<u64>)> {
        let mut http = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .timeout(self.timeout)
            .header("anthropic-version", API_VERSION)
            .json(body);
        if let Some(key) = &self.api_key {
            http = http.header("x-api-key", key);
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
            // {"type":"error","error":{"type":"invalid_request_error","message":"…"}}
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let message = v["error"]["message"].as_str()?;
                    Some(match v["error"]["type"].as_str() {
                        Some(kind) => format!("{kind}: {message}"),
                        None => message.to_owned(),
                    })
                })
                .unwrap_or(text);
            let code = status.as_u16();
            let reason =
                status
                    .canonical_reason()
                    .unwrap_or(if code == 529 { "Overloaded" } else { "" });
            let message = format!("the API answered {code} {reason}: {detail}");
            let error = smol_durable_core::http::status_error(code, message, retry_after_ms);
            return Err((error, retry_after_ms));
        }
        parse(&text, structured).map_err(|error| (error, None))
    }
}

/// A Messages API response as an agent result; `structured` when a schema was sent.
fn parse(text: &str, structured: bool) -> Result<AgentResponse, ProviderError> {
    let invalid = |why: &str| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            format!("the API's answer is not a message: {why}"),
        )
    };
    let raw: Value = serde_json::from_str(text).map_err(|_| invalid("not JSON"))?;
    let blocks = raw["content"]
        .as_array()
        .ok_or_else(|| invalid("no content[]"))?;
    let answer: String = blocks
        .iter()
        .filter(|block| block["type"] == "text")
        .filter_map(|block| block["text"].as_str())
        .collect();
    let usage = usage(&raw["usage"]);
    let failed = |message: String| {
        let error = ProviderError::terminal(message);
        match &usage {
            // The tokens were spent all the same: bill them.
            Some(usage) => error.with_usage(usage.clone()),
            None => error,
        }
    };
    match raw["stop_reason"].as_str() {
        Some("refusal") => {
            let mut message = "the model refused to answer".to_owned();
            if !answer.trim().is_empty() {
                message.push_str(": ");
                message.push_str(answer.trim());
            }
            return Err(failed(message));
        }
        Some("max_tokens") if structured => {
            return Err(failed(
                "the structured answer was cut off at max_tokens (truncated JSON): raise the maxTokens option"
                    .to_owned(),
            ));
        }
        _ => {}
    }
    let output = if structured {
        // Not JSON: hand back the text; the engine's schema check fails it and retries.
        serde_json::from_str(&answer).unwrap_or(Value::String(answer))
    } else {
        Value::String(answer)
    };
    let mut response = AgentResponse::new(output);
    response.usage = usage;
    response.model = raw["model"].as_str().map(str::to_owned);
    response.session_id = raw["id"].as_str().map(str::to_owned);
    response.raw = Some(raw);
    Ok(response)
}

/// `usage` of a message: `input_tokens` excludes cache reads and writes; the total counts
/// cache writes but not cache reads.
fn usage(usage: &Value) -> Option<Usage> {
    let tokens = |key: &str| usage[key].as_u64();
    let (input, output) = (tokens("input_tokens")?, tokens("output_tokens")?);
    let mut result = Usage::tokens(input, output);
    result.cache_write_tokens = tokens("cache_creation_input_tokens");
    result.cache_read_tokens = tokens("cache_read_input_tokens");
    result.total_tokens = Some(
        input
            .saturating_add(output)
            .saturating_add(result.cache_write_tokens.unwrap_or(0)),
    );
    Some(result)
}

#[async_trait]
impl AgentProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let body = self.body(&request)?;
        let structured = body.get("output_config").is_some();
        smol_durable_core::http::with_retries(self.max_retries, self.backoff, || {
            self.attempt(&body, structured)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // test code asserts
mod tests {
    use super::*;

    fn message(content: Value, stop_reason: &str) -> String {
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": content, "stop_reason": stop_reason,
            "usage": { "input_tokens": 5, "output_tokens": 2 }
        })
        .to_string()
    }

    #[test]
    fn text_blocks_are_concatenated_and_others_skipped() {
        let text = message(
            json!([
                { "type": "thinking", "thinking": "hmm" },
                { "type": "text", "text": "Hello, " },
                { "type": "tool_use", "id": "t", "name": "x", "input": {} },
                { "type": "text", "text": "world" }
            ]),
            "end_turn",
        );
        let response = parse(&text, false).expect("a message");
        assert_eq!(response.output, json!("Hello, world"));
        assert_eq!(response.usage, Some(Usage::tokens(5, 2)));
    }

    #[test]
    fn structured_answers_are_parsed_or_left_as_text() {
        let ok = message(json!([{ "type": "text", "text": "{\"a\":1}" }]), "end_turn");
        assert_eq!(parse(&ok, true).expect("json").output, json!({ "a": 1 }));
        assert_eq!(
            parse(&ok, false).expect("text").output,
            json!("{\"a\":1}"),
            "no schema, no parsing"
        );
        let bad = message(json!([{ "type": "text", "text": "not json" }]), "end_turn");
        assert_eq!(parse(&bad, true).expect("text").output, json!("not json"));
    }

    #[test]
    fn truncation_fails_only_structured_answers_and_bills_usage() {
        let cut = message(json!([{ "type": "text", "text": "{\"a\":" }]), "max_tokens");
        let error = parse(&cut, true).expect_err("truncated JSON");
        assert_eq!(error.kind(), ProviderErrorKind::Terminal);
        assert!(error.to_string().contains("max_tokens"), "{error}");
        assert_eq!(error.usage(), Some(&Usage::tokens(5, 2)));
        assert_eq!(
            parse(&cut, false).expect("text").output,
            json!("{\"a\":"),
            "plain text may be cut short"
        );
    }

    #[test]
    fn malformed_answers_are_invalid_responses() {
        for text in ["nope", "{}", "{\"content\":\"x\"}"] {
            let error = parse(text, false).expect_err(text);
            assert_eq!(error.kind(), ProviderErrorKind::InvalidResponse, "{text}");
        }
    }

    #[test]
    fn max_tokens_comes_from_the_options_when_positive() {
        let provider = AnthropicProvider::new("http://x", None)
            .default_model("m")
            .max_tokens(100);
        let sent = |options: Value| {
            let mut request = AgentRequest::new("p");
            request.options = options;
            provider.body(&request).expect("a body")["max_tokens"].clone()
        };
        assert_eq!(sent(Value::Null), json!(100));
        assert_eq!(sent(json!({ "maxTokens": 7 })), json!(7));
        assert_eq!(sent(json!({ "maxTokens": 7.0 })), json!(7));
        for ignored in [json!(0), json!(-3), json!(1.5), json!("9")] {
            assert_eq!(
                sent(json!({ "maxTokens": ignored })),
                json!(100),
                "{ignored}"
            );
        }
    }
}
