//! Child workflows as durable steps.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`engine_conformance_tests!`](crate::engine_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_children_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            scenarios::children,
            $factory,
            child_workflow_is_a_durable_step
        );
    };
}

/// `workflow(ref, args)` is a durable step with a child run; on resume a completed child is not
/// executed again, and its steps live under its own run id and scope.
pub async fn child_workflow_is_a_durable_step(fixture: Fixture) {
    let child_runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&child_runs);
    let failed_once = Arc::new(AtomicUsize::new(0));
    let fail = Arc::clone(&failed_once);
    let scripts = ScriptedEngine::new()
        .workflow("flows/child.mjs", move |ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let n = ctx.args()["n"].as_u64().unwrap_or(0);
                let answer = ctx.agent("hello", Value::Null).await?;
                Ok(json!({ "n": n, "answer": answer }))
            }
        })
        .workflow("flows/main.mjs", move |ctx| {
            let fail = Arc::clone(&fail);
            async move {
                let parent = ctx.agent("hello", Value::Null).await?;
                let child = ctx
                    .workflow(json!({ "scriptPath": "./child.mjs" }), json!({ "n": 7 }))
                    .await?;
                if fail.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(ScriptError::thrown("fail after the child"));
                }
                Ok(json!({ "parent": parent, "child": child }))
            }
        });
    let provider = Arc::new(ScriptedProvider::new("scripted"));
    let engine = builder(&fixture, &scripts, &provider)
        .workflow("child", scripts.source("flows/child.mjs"))
        .build()
        .expect("engine");
    engine
        .run(scripts.source("flows/main.mjs"), json!({}))
        .await
        .expect_err("first attempt fails");
    let store = fixture.store.as_ref();
    let run_id = only_run(store).await;
    assert_eq!(
        provider.call_count(),
        2,
        "the same prompt in parent and child is two steps"
    );
    // Resumed by an engine that cannot resolve the child's path any more (its file is gone):
    // a completed child step replays without it.
    let engine = builder(&fixture, &scripts, &provider)
        .build()
        .expect("engine");
    let resumed = engine
        .resume(&run_id, ResumeOptions::new())
        .await
        .expect("resume")
        .join()
        .await
        .expect("resumed");
    assert_eq!(
        resumed.result["child"],
        json!({ "n": 7, "answer": "echo: hello" })
    );
    assert_eq!(
        child_runs.load(Ordering::SeqCst),
        1,
        "a completed child is replayed, not executed"
    );
    assert_eq!(provider.call_count(), 2);
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    let child = all.iter().find(|run| !run.is_root()).expect("child run");
    assert_eq!(child.root_run_id, run_id);
    assert_eq!(child.parent_run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(child.state, State::Completed);
    let parent_steps = store.load_steps(&run_id).await.expect("steps");
    let workflow_step = parent_steps
        .iter()
        .find(|s| s.kind == StepKind::Workflow)
        .expect("workflow step");
    assert_eq!(
        child.parent_step_id.as_deref(),
        Some(workflow_step.step_id.as_str())
    );
    let child_steps = store.load_steps(&child.run_id).await.expect("child steps");
    assert_eq!(child_steps.len(), 1);
    assert!(child_steps[0].input_signature_json.contains(&format!(
        "\"workflowScope\":\"child:{}\"",
        workflow_step.checkpoint_name
    )));
    // Nesting limit and path confinement reject clearly.
    let escape = ScriptedEngine::new().workflow("flows/escape.mjs", |ctx| async move {
        Ok(ctx
            .workflow(json!({ "scriptPath": "../../etc/passwd" }), Value::Null)
            .await?)
    });
    let engine = builder(&fixture, &escape, &provider)
        .build()
        .expect("engine");
    let error = engine
        .run(escape.source("flows/escape.mjs"), json!({}))
        .await
        .expect_err("escape");
    assert!(
        error.to_string().contains("outside the workflow directory"),
        "{error}"
    );
}
