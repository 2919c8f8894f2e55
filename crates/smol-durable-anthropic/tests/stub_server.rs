//! The provider against a local stub of the Messages API (no network).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::time::Duration;

use serde_json::{json, Value};
use smol_durable_anthropic::AnthropicProvider;
use smol_durable_core::{AgentProvider, AgentRequest, ProviderErrorKind, Usage};
use smol_durable_testkit::{StubHttpServer, StubResponse};

fn message_with(text: &str, stop_reason: &str, usage: Value) -> StubResponse {
    StubResponse::json(
        200,
        json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-stub-2",
            "content": [{ "type": "text", "text": text }],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage
        }),
    )
}

fn message(text: &str) -> StubResponse {
    message_with(
        text,
        "end_turn",
        json!({ "input_tokens": 7, "output_tokens": 3 }),
    )
}

fn overloaded() -> StubResponse {
    StubResponse::json(
        529,
        json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
    )
}

fn provider(server: &StubHttpServer) -> AnthropicProvider {
    AnthropicProvider::new(server.url(), Some("sk-ant-test".into()))
        .retries(2, Duration::from_millis(10))
}

fn request(prompt: &str, options: Value) -> AgentRequest {
    let mut request = AgentRequest::new(prompt);
    request.options = options;
    request
}

#[tokio::test]
async fn a_call_sends_the_prompt_and_maps_the_answer() {
    let server = StubHttpServer::start(vec![message("hello back")]);
    let response = provider(&server)
        .run(request("hello", json!({ "model": "claude-test" })))
        .await
        .expect("answer");
    assert_eq!(response.output, json!("hello back"));
    assert_eq!(response.model.as_deref(), Some("claude-stub-2"));
    assert_eq!(response.session_id.as_deref(), Some("msg_01"));
    assert_eq!(response.usage, Some(Usage::tokens(7, 3)));
    assert_eq!(response.raw.as_ref().unwrap()["id"], json!("msg_01"));
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].request_line, "POST /v1/messages HTTP/1.1");
    assert_eq!(sent[0].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(
        sent[0].json(),
        json!({
            "model": "claude-test",
            "max_tokens": 4096,
            "messages": [{ "role": "user", "content": "hello" }]
        })
    );
}

#[tokio::test]
async fn max_tokens_comes_from_the_options_else_the_provider() {
    let server = StubHttpServer::start(vec![message("a")]);
    let provider = provider(&server).max_tokens(512);
    provider
        .run(request("x", json!({ "model": "m", "maxTokens": 64 })))
        .await
        .expect("answer");
    provider
        .run(request("x", json!({ "model": "m", "maxTokens": 0 })))
        .await
        .expect("answer");
    let sent = server.requests();
    assert_eq!(sent[0].json()["max_tokens"], json!(64));
    assert_eq!(sent[1].json()["max_tokens"], json!(512));
}

#[tokio::test]
async fn usage_maps_cache_writes_and_reads() {
    let server = StubHttpServer::start(vec![message_with(
        "cached",
        "end_turn",
        json!({
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000
        }),
    )]);
    let response = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("answer");
    let usage = response.usage.expect("usage");
    assert_eq!(usage.input_tokens, Some(10));
    assert_eq!(usage.output_tokens, Some(4));
    assert_eq!(usage.cache_write_tokens, Some(100));
    assert_eq!(usage.cache_read_tokens, Some(1000));
    assert_eq!(
        usage.total_tokens,
        Some(114),
        "input + output + cache writes, not cache reads"
    );
    assert_eq!(usage.cost, None);
}

#[tokio::test]
async fn a_schema_asks_for_structured_output_and_the_answer_is_parsed() {
    let server = StubHttpServer::start(vec![message("{\"name\":\"Ada\"}")]);
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string" } } });
    let response = provider(&server)
        .default_model("fallback-model")
        .run(request("who", json!({ "schema": schema })))
        .await
        .expect("answer");
    assert_eq!(response.output, json!({ "name": "Ada" }));
    let body = server.requests()[0].json();
    assert_eq!(body["model"], json!("fallback-model"));
    assert_eq!(
        body["output_config"],
        json!({ "format": { "type": "json_schema", "schema": schema } })
    );
}

#[tokio::test]
async fn a_rate_limit_is_retried_honouring_retry_after() {
    let server = StubHttpServer::start(vec![
        StubResponse::json(
            429,
            json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "slow down" } }),
        )
        .header("retry-after", "0"),
        message("finally"),
    ]);
    let started = std::time::Instant::now();
    let response = provider(&server)
        // A backoff the test would notice: retry-after 0 replaces it.
        .retries(2, Duration::from_secs(30))
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("answer after a retry");
    assert_eq!(response.output, json!("finally"));
    assert_eq!(server.requests().len(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "retry-after 0 was honoured"
    );
}

#[tokio::test]
async fn an_overload_waits_as_long_as_retry_after_says() {
    let server = StubHttpServer::start(vec![
        overloaded().header("retry-after", "1"),
        message("after a second"),
    ]);
    let started = std::time::Instant::now();
    let response = provider(&server)
        .retries(2, Duration::from_millis(1))
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("answer after a retry");
    assert_eq!(response.output, json!("after a second"));
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_null_schema_is_no_schema() {
    let server = StubHttpServer::start(vec![message("plain")]);
    provider(&server)
        .run(request("x", json!({ "model": "m", "schema": null })))
        .await
        .expect("answer");
    assert!(server.requests()[0].json().get("output_config").is_none());
}

#[tokio::test]
async fn overloaded_is_retried() {
    let server = StubHttpServer::start(vec![overloaded(), message("recovered")]);
    let response = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("answer after a retry");
    assert_eq!(response.output, json!("recovered"));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn overloaded_every_time_fails_after_the_retries_as_retryable() {
    let server = StubHttpServer::start(vec![overloaded()]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("keeps failing");
    assert_eq!(error.kind(), ProviderErrorKind::Transient);
    assert!(error.is_retryable());
    assert!(error.to_string().contains("529"), "{error}");
    assert!(error.to_string().contains("overloaded_error"), "{error}");
    assert_eq!(server.requests().len(), 3, "one try and two retries");
}

#[tokio::test]
async fn a_refusal_is_terminal() {
    let server = StubHttpServer::start(vec![message_with(
        "I can't help with that.",
        "refusal",
        json!({ "input_tokens": 7, "output_tokens": 3 }),
    )]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    assert!(error.to_string().contains("refused"), "{error}");
    assert!(
        error.to_string().contains("I can't help with that."),
        "{error}"
    );
    assert_eq!(
        error.usage(),
        Some(&Usage::tokens(7, 3)),
        "billed all the same"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_structured_answer_cut_off_at_max_tokens_is_terminal() {
    let server = StubHttpServer::start(vec![message_with(
        "{\"name\":",
        "max_tokens",
        json!({ "input_tokens": 7, "output_tokens": 3 }),
    )]);
    let error = provider(&server)
        .run(request(
            "x",
            json!({ "model": "m", "schema": { "type": "object" } }),
        ))
        .await
        .expect_err("truncated");
    assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    assert!(error.to_string().contains("max_tokens"), "{error}");
}

#[tokio::test]
async fn a_bad_request_is_terminal_and_carries_anthropics_message() {
    let server = StubHttpServer::start(vec![StubResponse::json(
        400,
        json!({
            "type": "error",
            "error": { "type": "invalid_request_error", "message": "max_tokens: must be at least 1" }
        }),
    )]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    assert!(error.to_string().contains("400"), "{error}");
    assert!(
        error
            .to_string()
            .contains("invalid_request_error: max_tokens: must be at least 1"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_missing_model_fails_without_a_request() {
    let server = StubHttpServer::start(vec![message("never")]);
    let error = provider(&server)
        .run(request("x", Value::Null))
        .await
        .expect_err("no model");
    assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    assert!(error.to_string().contains("ANTHROPIC_MODEL"), "{error}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_slow_server_times_out_and_is_retried() {
    let server = StubHttpServer::start(vec![
        message("late").delayed(Duration::from_millis(800)),
        message("on time"),
    ]);
    let response = provider(&server)
        .timeout(Duration::from_millis(200))
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("the retry answers");
    assert_eq!(response.output, json!("on time"));
}

#[test]
fn the_provider_is_named_anthropic_unless_renamed() {
    let provider = AnthropicProvider::new("http://127.0.0.1:1", None);
    assert_eq!(provider.name(), AnthropicProvider::NAME);
    assert_eq!(provider.name(), "anthropic");
    assert_eq!(provider.named("claude-api").name(), "claude-api");
}
