//! A [`SessionLogSink`] that keeps every provider result as a JSON file.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::json;

use crate::{AgentResponse, BoxError, SessionLogSink};

/// Saves each agent call's full result (with `raw`) as `DIR/<run_id>/<step_id>.json`
/// (`{provider, runId, stepId, sessionId, model, usage, output, raw}`), before the step
/// completes. A reclaimed call that runs again overwrites its file; the step id is stable.
///
/// ```
/// use std::sync::Arc;
/// use smol_durable_core::{Engine, SessionLogDir};
///
/// let builder = Engine::builder().session_log_sink(Arc::new(SessionLogDir::new("sessions")));
/// ```
#[derive(Debug, Clone)]
pub struct SessionLogDir {
    dir: PathBuf,
}

impl SessionLogDir {
    /// Files go under `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl SessionLogSink for SessionLogDir {
    async fn save(
        &self,
        provider: &str,
        run_id: &str,
        step_id: &str,
        response: &AgentResponse,
    ) -> Result<(), BoxError> {
        let document = json!({
            "provider": provider,
            "runId": run_id,
            "stepId": step_id,
            "sessionId": response.session_id,
            "model": response.model,
            "usage": response.usage,
            "output": response.output,
            "raw": response.raw,
        });
        let text = serde_json::to_vec_pretty(&document)?;
        // Ids are generated (`run_…`, `step_…`); refuse anything that could leave the directory.
        let safe = |id: &str| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !safe(run_id) || !safe(step_id) {
            return Err(
                format!("refusing to save a session under ids {run_id:?}/{step_id:?}").into(),
            );
        }
        let dir = self.dir.join(run_id);
        let path = dir.join(format!("{step_id}.json"));
        tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            std::fs::create_dir_all(&dir)?;
            // Written aside and renamed, so a crash never leaves half a transcript.
            let partial = path.with_extension("json.partial");
            std::fs::write(&partial, text)?;
            std::fs::rename(&partial, &path)?;
            Ok(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[tokio::test]
    async fn each_result_becomes_one_file() {
        let dir =
            std::env::temp_dir().join(format!("smol-durable-sessions-{}", std::process::id()));
        let sink = SessionLogDir::new(&dir);
        let mut response = AgentResponse::new(json!("hi"));
        response.raw = Some(json!({ "transcript": ["a", "b"] }));
        response.session_id = Some("s1".into());
        sink.save("debug", "run_1", "step_1", &response)
            .await
            .expect("saved");
        let text = std::fs::read_to_string(dir.join("run_1/step_1.json")).expect("file");
        let saved: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(saved["raw"]["transcript"], json!(["a", "b"]));
        assert_eq!(saved["sessionId"], json!("s1"));
        assert_eq!(saved["provider"], json!("debug"));
        for (run_id, step_id) in [
            ("../x", "step_1"),
            ("run_1", "../../escaped"),
            ("run_1", "/etc/passwd"),
            ("run_1", ""),
            ("run_1", "a/b"),
            (".", "step_1"),
        ] {
            let error = sink
                .save("debug", run_id, step_id, &response)
                .await
                .expect_err("refused");
            assert!(error.to_string().contains("refusing"), "{error}");
        }
        assert!(
            !dir.join("escaped.json").exists()
                && !dir
                    .parent()
                    .is_some_and(|p| p.join("escaped.json").exists())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
