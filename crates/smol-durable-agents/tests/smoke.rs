//! One real call per coding-agent CLI, for a person checking that today's CLIs still print
//! what the fakes print. They spend real tokens, so they are ignored by default and run only
//! with `SMOL_DURABLE_SMOKE_AGENTS=1 cargo test -p smol-durable-agents --test smoke --
//! --ignored`; a CLI that is not installed, or a run without the variable, prints one loud
//! SKIPPED line instead. The suite never counts them as passing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::sync::Arc;

use serde_json::json;
use smol_durable_agents::{ClaudeCodeProvider, CodexProvider, OpencodeProvider, PiProvider};
use smol_durable_core::{AgentProvider, AgentRequest};

const ASKED: &str = "SMOL_DURABLE_SMOKE_AGENTS";

/// The provider, unless the smoke test should not run (then why, already printed).
fn real(command: &str, provider: Arc<dyn AgentProvider>) -> Option<Arc<dyn AgentProvider>> {
    if std::env::var(ASKED).as_deref() != Ok("1") {
        eprintln!("SKIPPED: smoke test of the real `{command}` (set {ASKED}=1 to run it; it spends tokens)");
        return None;
    }
    let installed = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        eprintln!("SKIPPED: smoke test of the real `{command}`: not installed");
        return None;
    }
    Some(provider)
}

async fn pong(provider: Arc<dyn AgentProvider>) {
    let mut request = AgentRequest::new("Reply with the single word pong and nothing else.");
    request.context.cwd = std::env::temp_dir().to_str().map(str::to_owned);
    let response = provider.run(request).await.expect("the real CLI answers");
    assert!(
        response
            .output
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("pong"),
        "{:?}",
        response.output
    );
    assert!(response.session_id.is_some());
    let usage = response.usage.expect("usage");
    assert!(usage.output_tokens.unwrap_or(0) > 0, "{usage:?}");
    let mut structured = AgentRequest::new("Give the number 7 as the field n.");
    structured.options = json!({ "schema": { "type": "object", "properties": { "n": { "type": "integer" } }, "required": ["n"] } });
    let response = provider.run(structured).await.expect("structured");
    assert_eq!(response.output["n"], json!(7), "{:?}", response.output);
}

#[tokio::test]
#[ignore = "spends real tokens: SMOL_DURABLE_SMOKE_AGENTS=1 … -- --ignored"]
async fn real_claude_code() {
    if let Some(provider) = real("claude", Arc::new(ClaudeCodeProvider::new())) {
        pong(provider).await;
    }
}

#[tokio::test]
#[ignore = "spends real tokens: SMOL_DURABLE_SMOKE_AGENTS=1 … -- --ignored"]
async fn real_codex() {
    if let Some(provider) = real("codex", Arc::new(CodexProvider::new())) {
        pong(provider).await;
    }
}

#[tokio::test]
#[ignore = "spends real tokens: SMOL_DURABLE_SMOKE_AGENTS=1 … -- --ignored"]
async fn real_opencode() {
    if let Some(provider) = real("opencode", Arc::new(OpencodeProvider::new())) {
        pong(provider).await;
    }
}

#[tokio::test]
#[ignore = "spends real tokens: SMOL_DURABLE_SMOKE_AGENTS=1 … -- --ignored"]
async fn real_pi() {
    if let Some(provider) = real("pi", Arc::new(PiProvider::new())) {
        pong(provider).await;
    }
}
