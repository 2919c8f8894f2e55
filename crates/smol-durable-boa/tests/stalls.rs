//! A script that boa stops without an error after an `await` (its loop and recursion limits
//! are dropped there) is not reported as a plain deadlock: a loop says which limit stopped it,
//! and the deadlock message names runaway recursion as the other cause.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use serde_json::json;
use smol_durable_boa::BoaEngine;
use smol_durable_core::{Error, Limits, ScriptErrorKind};
use smol_durable_testkit::ScriptedProvider;

mod common;

const META: &str = "export const meta = { name: \"stalls\", description: \"stalls\" };\n";

/// A small loop limit keeps the loop short; it still runs long enough to be told apart.
fn setup() -> common::Setup {
    common::setup_with_engine(
        ScriptedProvider::new("scripted"),
        Limits::default(),
        BoaEngine::new().loop_iteration_limit(1_000_000),
    )
}

async fn failure(body: &str) -> Error {
    setup()
        .run("stall.mjs", &format!("{META}{body}"), json!({}))
        .await
        .expect_err("the run fails")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_past_its_limit_after_an_await_says_so() {
    for body in [
        "await agent('x');\nlet i = 0; while (true) { i++; }\nexport default i;\n",
        "const r = await parallel([async () => { await agent('y'); for (;;) {} }, () => agent('z')]);\nexport default r;\n",
    ] {
        let error = failure(body).await;
        match &error {
            Error::Script(script) => assert_eq!(script.kind(), ScriptErrorKind::Limit, "{body}: {error}"),
            other => panic!("not a script error: {other}"),
        }
        assert!(
            error
                .to_string()
                .contains("the workflow exceeded the JavaScript loop iteration limit after an await"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_is_still_a_deadlock_and_names_recursion_as_the_other_cause() {
    for body in [
        "await agent('x');\nawait new Promise(() => {});\nexport default 1;\n",
        "await new Promise(() => {});\nexport default 1;\n",
        "await agent('x');\nfunction f(n) { return f(n + 1) + 1; }\nexport default f(0);\n",
    ] {
        let error = failure(body).await;
        let text = error.to_string();
        assert!(
            text.starts_with("deadlock: the workflow awaits a promise that can never settle"),
            "{text}"
        );
        assert!(
            text.contains("a runaway recursion after an await ends the same way"),
            "{text}"
        );
    }
}
