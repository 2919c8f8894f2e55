//! The provider against a local stub of the Chat Completions API (no network).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable_core::{AgentProvider, AgentRequest, ProviderErrorKind, Usage};
use smol_durable_openai::OpenAiProvider;
use smol_durable_testkit::{StubHttpServer, StubResponse};

fn completion(content: &str) -> StubResponse {
    StubResponse::json(
        200,
        json!({
            "id": "chatcmpl-1",
            "model": "stub-model-2",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": content } }],
            "usage": { "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10 }
        }),
    )
}

fn provider(server: &StubHttpServer) -> OpenAiProvider {
    OpenAiProvider::new(format!("{}/v1", server.url()), Some("sk-test".into()))
        .retries(2, Duration::from_millis(10))
}

fn request(prompt: &str, options: Value) -> AgentRequest {
    let mut request = AgentRequest::new(prompt);
    request.options = options;
    request
}

#[tokio::test]
async fn a_call_sends_the_prompt_and_maps_the_answer() {
    let server = StubHttpServer::start(vec![completion("hello back")]);
    let response = provider(&server)
        .run(request("hello", json!({ "model": "gpt-test" })))
        .await
        .expect("answer");
    assert_eq!(response.output, json!("hello back"));
    assert_eq!(response.model.as_deref(), Some("stub-model-2"));
    assert_eq!(response.session_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(response.usage, Some(Usage::tokens(7, 3)));
    assert!(response.raw.is_some());
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(
        sent[0].json(),
        json!({ "model": "gpt-test", "messages": [{ "role": "user", "content": "hello" }] })
    );
}

#[tokio::test]
async fn a_schema_asks_for_structured_output() {
    let server = StubHttpServer::start(vec![completion("{\"name\":\"Ada\"}")]);
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string" } } });
    let response = provider(&server)
        .default_model("fallback-model")
        .run(request("who", json!({ "schema": schema })))
        .await
        .expect("answer");
    assert_eq!(
        response.output,
        json!("{\"name\":\"Ada\"}"),
        "the engine parses and validates"
    );
    let body = server.requests()[0].json();
    assert_eq!(body["model"], json!("fallback-model"));
    assert_eq!(body["response_format"]["type"], json!("json_schema"));
    assert_eq!(body["response_format"]["json_schema"]["schema"], schema);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let server = StubHttpServer::start(vec![
        StubResponse::json(429, json!({ "error": { "message": "slow down" } }))
            .header("Retry-After", "0.3"),
        StubResponse::json(503, json!({})),
        completion("finally"),
    ]);
    let started = Instant::now();
    let response = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("answer after retries");
    assert_eq!(response.output, json!("finally"));
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn errors_are_classified_and_retries_end() {
    let server = StubHttpServer::start(vec![StubResponse::json(500, json!({}))]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("keeps failing");
    assert_eq!(error.kind(), ProviderErrorKind::Transient);
    assert_eq!(server.requests().len(), 3, "one try and two retries");

    let server = StubHttpServer::start(vec![StubResponse::json(
        400,
        json!({ "error": { "message": "bad model name" } }),
    )]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ProviderErrorKind::Terminal);
    assert!(error.to_string().contains("bad model name"), "{error}");
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");

    let server = StubHttpServer::start(vec![StubResponse::json(200, json!({ "choices": [] }))]);
    let error = provider(&server)
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect_err("not a completion");
    assert_eq!(error.kind(), ProviderErrorKind::InvalidResponse);

    let error = provider(&server)
        .run(request("x", Value::Null))
        .await
        .expect_err("no model");
    assert!(error.to_string().contains("OPENAI_MODEL"), "{error}");
}

#[tokio::test]
async fn a_slow_server_times_out_and_is_retried() {
    let server = StubHttpServer::start(vec![
        completion("late").delayed(Duration::from_millis(800)),
        completion("on time"),
    ]);
    let response = provider(&server)
        .timeout(Duration::from_millis(200))
        .run(request("x", json!({ "model": "m" })))
        .await
        .expect("the retry answers");
    assert_eq!(response.output, json!("on time"));
}
