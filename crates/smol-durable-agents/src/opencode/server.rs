//! opencode's server mode: `opencode serve` on a loopback port, one session, one message.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use smol_durable_core::process::{working_dir, ProcessGroupGuard};
use smol_durable_core::{
    AgentEvent, AgentRequest, AgentResponse, ProviderError, ProviderErrorKind,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{action, error_detail, error_status, retryable_if_marked, step_tokens, DISPLAY};
use crate::answer::{output, schema, text, Tokens};
use crate::{no_session, option};

/// `sh -c` script: runs `"$0" "$@"` (the server) and a watchdog that kills the whole group
/// once stdin closes; exits with the server's status.
/// (A background job's stdin is `/dev/null` unless redirected, hence the copy on fd 3; the
/// watchdog holds none of the output pipes, so they close when the server ends.)
const SERVE_WITH_WATCHDOG: &str = r#"exec 3<&0; "$0" "$@" </dev/null 3<&- & server=$!; (cat <&3; kill -KILL 0) >/dev/null 2>&1 & exec 3<&-; wait "$server""#;

/// How long the server may take to say where it listens (smol-wf's limit).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one call through a server started for it, stopped (its process group killed) when the
/// call ends or is dropped.
pub(super) async fn run(
    program: &std::path::Path,
    request: &AgentRequest,
) -> Result<AgentResponse, ProviderError> {
    // A server never stops by itself, and a process killed with `kill -9` cannot stop it: a
    // watchdog in its process group waits for this process's end of a pipe to close (which
    // happens however this process ends) and then kills the group. The shell exits with the
    // server's status.
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", SERVE_WITH_WATCHDOG])
        .arg(program)
        .args(["serve", "--hostname", "127.0.0.1", "--port", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = working_dir(request) {
        command.current_dir(cwd);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|error| {
        ProviderError::terminal(format!(
            "{DISPLAY} provider could not start {}: {error}",
            program.display()
        ))
        .with_source(error)
    })?;
    // Killed however the call ends: the server does not stop by itself.
    let _group = ProcessGroupGuard::new(child.id());
    // Held until the call ends; its closing is the watchdog's signal.
    let _lifeline = child.stdin.take();
    let stdout = child.stdout.take().ok_or_else(|| {
        ProviderError::terminal(format!("{DISPLAY} provider: the server has no stdout"))
    })?;
    let mut lines = BufReader::new(stdout).lines();
    // Kept for the error of a server that exits at once; read all along so it never fills.
    let stderr = child.stderr.take();
    let stderr = tokio::spawn(async move {
        match stderr {
            Some(stderr) => crate::process::read_capped(stderr, 1 << 16).await,
            None => String::new(),
        }
    });
    let started = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(start) = line.find("http://") {
                let url = line[start..].split_whitespace().next().unwrap_or_default();
                return Some(url.trim_end_matches('/').to_owned());
            }
        }
        None
    })
    .await;
    let base = match started {
        Ok(Some(base)) => base,
        // Its stdout closed: the server stopped before it listened.
        Ok(None) => {
            return Err(stopped(&mut child, stderr).await.unwrap_or_else(|| {
                ProviderError::transient(format!(
                    "{DISPLAY} provider: `opencode serve` closed its output"
                ))
            }))
        }
        Err(_) => {
            return Err(ProviderError::transient(format!(
                "{DISPLAY} provider: `opencode serve` did not report its address within {} s",
                START_TIMEOUT.as_secs()
            )))
        }
    };
    // The server's later output is not read; drain it so it never blocks on a full pipe.
    tokio::spawn(crate::process::read_capped(lines.into_inner(), 0));

    // Loopback only: a proxy from the environment must not see the call.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|error| {
            ProviderError::terminal(format!("{DISPLAY} provider: no HTTP client: {error}"))
        })?;
    let schema = schema(request);
    let exchange = async {
        let session: Value = post(&client, &format!("{base}/session"), &json!({})).await?;
        let session_id = text(&session, "/id")
            .map(str::to_owned)
            .ok_or_else(|| no_session(DISPLAY, None))?;
        let mut body = json!({ "parts": [{ "type": "text", "text": request.prompt }] });
        if let Some((provider, model)) =
            option(request, "model").and_then(|model| model.split_once('/'))
        {
            body["model"] = json!({ "providerID": provider, "modelID": model });
        }
        if let Some(agent) = option(request, "agentType") {
            body["agent"] = json!(agent);
        }
        if let Some(variant) = option(request, "thinking") {
            body["variant"] = json!(variant);
        }
        if let Some(schema) = schema {
            body["format"] = json!({ "type": "json_schema", "schema": schema, "retryCount": 2 });
        }
        let answer: Value = post(
            &client,
            &format!("{base}/session/{session_id}/message"),
            &body,
        )
        .await?;
        let messages = get(&client, &format!("{base}/session/{session_id}/message")).await?;
        Ok::<_, ProviderError>((session_id, answer, messages))
    };
    let (session_id, answer, messages) = match exchange.await {
        Ok(exchanged) => exchanged,
        // A server that died mid-way says why on its stderr.
        Err(error) => return Err(stopped(&mut child, stderr).await.unwrap_or(error)),
    };
    let info = answer.get("info").cloned().unwrap_or(Value::Null);
    // The answer is the last step's message only: the call's usage is the sum over every
    // assistant message of the session (one per step), and their parts are its events.
    let messages = match messages {
        Value::Array(messages) => messages,
        _ => Vec::new(),
    };
    let mut tokens = Tokens::default();
    for message in &messages {
        if text(message, "/info/role") == Some("assistant") {
            tokens.add(step_tokens(message.get("info").unwrap_or(&Value::Null)));
        }
        for part in message
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // In the shape `opencode run` prints: `tool` parts are `tool_use` lines.
            let kind = match text(part, "/type") {
                Some("tool") => "tool_use",
                Some(other) => other,
                None => "part",
            };
            let line = json!({ "type": kind, "sessionID": session_id, "part": part });
            request.events.send(
                AgentEvent::new(line.clone())
                    .with_session_id(Some(&session_id))
                    .with_action(action(&line)),
            );
        }
    }
    let parts = answer
        .get("parts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let usage = Some(tokens.usage());
    if let Some(error) = info.get("error").filter(|error| !error.is_null()) {
        let line = json!({ "type": "error", "error": error });
        let detail = error_detail(&line);
        let failed = crate::failure(
            format!("{DISPLAY} provider reported an error: {detail}"),
            error_status(&line),
            &detail,
            usage,
        );
        return Err(retryable_if_marked(failed, Some(&line)));
    }
    let text_answer: String = parts
        .iter()
        .filter(|part| text(part, "/type") == Some("text"))
        .filter_map(|part| text(part, "/text"))
        .collect::<Vec<_>>()
        .join("");
    let value = match info
        .get("structured")
        .filter(|value| !value.is_null() && schema.is_some())
    {
        Some(value) => value.clone(),
        None => output(text_answer, schema.is_some()),
    };
    let mut response = AgentResponse::new(value)
        .with_session_id(session_id)
        .with_raw(Value::Array(messages));
    response.usage = usage;
    response.model = match (text(&info, "/providerID"), text(&info, "/modelID")) {
        (Some(provider), Some(model)) => Some(format!("{provider}/{model}")),
        _ => request.model().map(str::to_owned),
    };
    Ok(response)
}

/// The error of a server that exited (within a moment): smol-wf's exit message with its
/// stderr; `None` while it still runs.
async fn stopped(
    child: &mut tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
) -> Option<ProviderError> {
    let status = tokio::time::timeout(Duration::from_millis(500), child.wait())
        .await
        .ok()?
        .ok()?;
    let finished = crate::process::Finished {
        display: DISPLAY,
        code: status.code(),
        lines: Vec::new(),
        stderr: stderr.await.unwrap_or_default(),
        session: None,
    };
    Some(crate::failure(
        finished.exit_message(),
        None,
        &finished.stderr,
        None,
    ))
}

/// POSTs `body` as JSON; the answer as JSON, or an error naming the status and body.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value, ProviderError> {
    answer(client.post(url).json(body)).await
}

/// GETs `url`; the answer as JSON.
async fn get(client: &reqwest::Client, url: &str) -> Result<Value, ProviderError> {
    answer(client.get(url)).await
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Value, ProviderError> {
    let response = request.send().await.map_err(|error| {
        ProviderError::transient(format!(
            "{DISPLAY} provider: request to the server failed: {error}"
        ))
        .with_source(error)
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(crate::failure(
            format!(
                "{DISPLAY} provider: the server answered {status}: {}",
                crate::process::cut(text.trim(), 4_000)
            ),
            Some(u64::from(status.as_u16())),
            &text,
            None,
        ));
    }
    serde_json::from_str(&text).map_err(|error| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            format!("{DISPLAY} provider: the server's answer is not JSON: {error}"),
        )
    })
}
