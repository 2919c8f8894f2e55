//! What a child `workflow(ref)` call names: a `{scriptPath}` confined to the root workflow's
//! directory, a workflow registered with the engine, or one found by name in the project's
//! workflow directories.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{invalid, RunScope};
use crate::script::{HostError, WorkflowSource};

impl RunScope {
    /// A named workflow from the project's workflow directories, searched from the calling
    /// script's directory; smol-wf's message when there is none.
    async fn find_named(&self, name: &str) -> Result<WorkflowSource, HostError> {
        let start = self
            .source_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let scripts = Arc::clone(&self.ctx.engine.scripts);
        let wanted = name.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let dirs = crate::paths::named_workflow_dirs(&start);
            let path = crate::paths::find_named_workflow(&dirs, &wanted, |path| {
                let source = WorkflowSource::from_file(path).ok()?;
                scripts.read_metadata(&source).ok().map(|meta| meta.name)
            })?;
            WorkflowSource::from_file(path).ok()
        })
        .await;
        match found {
            Ok(Some(source)) => Ok(source),
            Ok(None) => Err(invalid(format!("Unknown workflow: {name}"))),
            Err(join_error) => Err(invalid(format!(
                "looking up workflow {name} failed: {join_error}"
            ))),
        }
    }

    /// Resolves `workflow(ref)`: a `{scriptPath}` relative to the calling script and confined to
    /// the root workflow's directory, or a name: registered with the engine, else found in the
    /// project's workflow directories ([`crate::paths::named_workflow_dirs`], never the
    /// process's working directory).
    pub(super) async fn resolve_child(
        &self,
        reference: &Value,
    ) -> Result<WorkflowSource, HostError> {
        let name = match reference {
            Value::String(name) => Some(name.as_str()),
            Value::Object(map) => map.get("name").and_then(Value::as_str),
            _ => None,
        };
        if let Some(name) = name {
            if let Some(source) = self.ctx.engine.named_workflows.get(name) {
                return Ok(source.clone());
            }
            return self.find_named(name).await;
        }
        let script_path = reference
            .get("scriptPath")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(format!(
                    "workflow ref must be a name or {{scriptPath}}, got {reference}"
                ))
            })?;
        let base = self.source_path.parent().unwrap_or(Path::new(""));
        let joined = crate::paths::normalize(&base.join(script_path));
        if !joined.starts_with(crate::paths::normalize(&self.root_dir)) {
            return Err(invalid(format!(
                "workflow path {script_path:?} resolves outside the workflow directory {}",
                self.root_dir.display()
            )));
        }
        if let Some(source) = self.ctx.engine.workflows_by_path.get(&joined) {
            return Ok(source.clone());
        }
        let path = joined.clone();
        let root = self.root_dir.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<WorkflowSource, String> {
            // Symlinks must not lead out of the workflow directory either.
            let real = crate::paths::confined(&root, &path).map_err(|error| match error {
                crate::paths::ConfineError::Outside { .. } => format!(
                    "workflow {} resolves outside the workflow directory",
                    path.display()
                ),
                other => format!("cannot open workflow: {other}"),
            })?;
            let text = std::fs::read_to_string(&real)
                .map_err(|e| format!("cannot read workflow {}: {e}", path.display()))?;
            Ok(WorkflowSource { path, text })
        })
        .await;
        match read {
            Ok(Ok(source)) => Ok(source),
            Ok(Err(message)) => Err(invalid(message)),
            Err(join_error) => Err(invalid(format!("reading workflow failed: {join_error}"))),
        }
    }
}
