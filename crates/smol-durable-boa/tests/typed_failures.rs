//! A host call's rejection that escapes a real JavaScript workflow fails the run with its typed
//! error, in both engine modes: never caught, rethrown as it is, or through `Promise.all`. An
//! error the script makes of its own stays a script error.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use smol_durable_boa::{BoaEngine, IsolatedEngine};
use smol_durable_core::{
    Engine, Error, ErrorKind, MemoryStore, ProviderErrorKind, RunRequest, ScriptEngine,
    WorkflowSource,
};
use smol_durable_testkit::ScriptedProvider;

fn engines() -> Vec<(&'static str, Arc<dyn ScriptEngine>)> {
    vec![
        ("in-process", Arc::new(BoaEngine::new())),
        (
            "isolated",
            Arc::new(IsolatedEngine::new(env!(
                "CARGO_BIN_EXE_smol-durable-script-host"
            ))),
        ),
    ]
}

/// A child that makes the refused call, callable as `workflow("child")`.
const CHILD: &str = "export const meta = { name: \"child\", description: \"c\" };\nexport default await agent(\"refused\");\n";

async fn fail(scripts: Arc<dyn ScriptEngine>, text: &str, budget: Option<u64>) -> Error {
    let provider = Arc::new(ScriptedProvider::new("scripted").fail_first(
        "refused",
        100,
        ProviderErrorKind::Terminal,
        None,
    ));
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(scripts)
        .provider(provider)
        .workflow("child", WorkflowSource::inline("/flows/child.mjs", CHILD))
        .build()
        .expect("engine");
    let mut request = RunRequest::new(WorkflowSource::inline("/flows/main.mjs", text), json!({}));
    if let Some(total) = budget {
        request = request.budget_total(total);
    }
    let run = engine.start(request).await.expect("start");
    tokio::time::timeout(Duration::from_secs(30), run.join())
        .await
        .expect("the run ends")
        .expect_err("the run fails")
}

const META: &str = "export const meta = { name: \"t\", description: \"t\" };\n";

#[tokio::test]
async fn an_escaped_rejection_fails_the_run_with_its_typed_error() {
    let scripts = [
        "export default await agent(\"refused\");\n",
        "try { await agent(\"refused\"); } catch (e) { log(e.message); throw e; }\nexport default 1;\n",
        "export default await Promise.all([agent(\"fine\"), agent(\"refused\")]);\n",
    ];
    for (mode, engine) in engines() {
        for script in scripts {
            let error = fail(Arc::clone(&engine), &format!("{META}{script}"), None).await;
            match &error {
                Error::Provider(provider) => {
                    assert_eq!(
                        provider.kind(),
                        ProviderErrorKind::Terminal,
                        "{mode}: {script}"
                    )
                }
                other => panic!("{mode}: {script}: expected a provider error, got {other:?}"),
            }
        }
        let budget = fail(
            Arc::clone(&engine),
            &format!("{META}export default await agent(\"paid\");\n"),
            Some(0),
        )
        .await;
        assert_eq!(
            budget.kind(),
            ErrorKind::BudgetExhausted,
            "{mode}: {budget:?}"
        );
    }
}

#[tokio::test]
async fn an_error_the_script_makes_of_its_own_stays_a_script_error() {
    for (mode, engine) in engines() {
        let error = fail(
            engine,
            &format!("{META}try {{ await agent(\"refused\"); }} catch (e) {{ throw new Error(\"review failed: \" + e.message); }}\nexport default 1;\n"),
            None,
        )
        .await;
        assert_eq!(error.kind(), ErrorKind::Script, "{mode}: {error:?}");
        assert!(
            error.to_string().contains("review failed: "),
            "{mode}: {error}"
        );
    }
}

#[tokio::test]
async fn a_child_s_typed_failure_is_the_cause_of_its_parent_s() {
    for (mode, engine) in engines() {
        let error = fail(
            engine,
            &format!("{META}export default await workflow(\"child\");\n"),
            None,
        )
        .await;
        match &error {
            Error::Workflow {
                cause: Some(cause), ..
            } => assert!(
                matches!(&**cause, Error::Provider(p) if p.kind() == ProviderErrorKind::Terminal),
                "{mode}: {cause:?}"
            ),
            other => panic!("{mode}: expected a failed child, got {other:?}"),
        }
    }
}
