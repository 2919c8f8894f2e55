//! A JavaScript workflow setup shared by the script test files: scripts written to a temporary
//! directory, run through the whole engine on a memory store with a scripted provider.

#![allow(dead_code, clippy::expect_used)] // each test file uses part of it; test code asserts

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use smol_durable_boa::BoaEngine;
use smol_durable_core::{
    Engine, Error, Limits, MemoryStore, ResumeOptions, RunOutput, WorkflowSource,
};
use smol_durable_testkit::ScriptedProvider;

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
    pub provider: Arc<ScriptedProvider>,
}

/// An engine with the default limits.
pub fn setup(provider: ScriptedProvider) -> Setup {
    setup_with_limits(provider, Limits::default())
}

pub fn setup_with_limits(provider: ScriptedProvider, limits: Limits) -> Setup {
    setup_with_engine(provider, limits, BoaEngine::new())
}

/// An engine running scripts on `boa` (with limits of its own).
pub fn setup_with_engine(provider: ScriptedProvider, limits: Limits, boa: BoaEngine) -> Setup {
    let provider = Arc::new(provider);
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(boa))
        .provider(provider.clone())
        .limits(limits)
        .build()
        .expect("engine");
    Setup {
        dir: tempfile::tempdir().expect("dir"),
        engine,
        provider,
    }
}

impl Setup {
    pub fn write(&self, name: &str, text: &str) -> WorkflowSource {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write script");
        WorkflowSource::from_file(&path).expect("read script")
    }

    pub async fn run(&self, name: &str, text: &str, args: Value) -> Result<RunOutput, Error> {
        let source = self.write(name, text);
        tokio::time::timeout(Duration::from_secs(20), self.engine.run(source, args))
            .await
            .expect("the run must not hang")
            .map_err(Error::from)
    }

    /// Resumes the newest run (the script as it is on disk now) and waits for its end.
    pub async fn resume_newest(&self) -> Result<RunOutput, Error> {
        let runs = self.engine.list_runs(&Default::default()).await?;
        let newest = runs.first().expect("a run to resume");
        self.engine
            .resume(&newest.run_id, ResumeOptions::new())
            .await?
            .join()
            .await
    }
}
