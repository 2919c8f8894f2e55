//! `smol-durable ui` over HTTP, on SQLite and on PostgreSQL: every page, the JSON API, the live
//! event stream and every action (signal through a wait's schema, cancel, delete, fork), with
//! hostile text from the store escaped, the Host, Origin and token checks, `--read-only`, and
//! asset paths that lead nowhere else.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cli, Inspector};

/// Script text that would run in a page if it were not escaped.
const HOSTILE: &str =
    r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>javascript:alert(3)"#;

/// The example that waits for a person's `review` signal (its schema: `decision` of approve,
/// reject or revise, and an optional `comment`).
fn approval() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/approval.mjs")
        .display()
        .to_string()
}

/// A completed run whose prompt, arguments and result carry [`HOSTILE`]; its id.
fn hostile_run(cli: &Cli) -> String {
    cli.write(
        "hostile.mjs",
        "export const meta = { name: 'hostile', description: 'markup everywhere' };\n\
         phase(args.text);\n\
         log(args.text);\n\
         export default await agent(`say ${args.text}`);\n",
    );
    let output = cli.json(&["run", "hostile.mjs", "--args-text", HOSTILE]);
    output["runID"].as_str().expect("runID").to_owned()
}

/// A run of [`approval`] waiting for its review, in a `run` process of its own (killed when
/// dropped); its id.
struct Waiting {
    process: Child,
    run_id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn waiting_run(cli: &Cli, ui: &Inspector, task: &str) -> Waiting {
    let before: Vec<String> = ui
        .json("/api/waits")
        .as_array()
        .unwrap()
        .iter()
        .map(|wait| wait["runId"].as_str().unwrap().to_owned())
        .collect();
    // Killed when dropped, whatever happens below.
    let mut waiting = Waiting {
        process: cli.spawn(&["run", &approval(), "--args-task", task]),
        run_id: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waits = ui.json("/api/waits");
        let new = waits
            .as_array()
            .unwrap()
            .iter()
            .map(|wait| wait["runId"].as_str().unwrap().to_owned())
            .find(|run_id| !before.contains(run_id));
        if let Some(run_id) = new {
            waiting.run_id = run_id;
            return waiting;
        }
        assert!(Instant::now() < deadline, "the run never waited");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the run's state until it is `state`.
fn wait_for_state(ui: &Inspector, run_id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let run = ui.json(&format!("/api/runs/{run_id}"));
        if run["run"]["state"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never became {state}: {}",
            run["run"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const JSON: &str = "Content-Type: application/json\r\n";

fn every_route_and_action(cli: &Cli) {
    let run_id = hostile_run(cli);
    let ui = Inspector::start(cli, &["--listen", "127.0.0.1:0"]);
    assert_eq!(ui.query, "", "loopback needs no token");

    // The runs list and a run's page: everything from the store is text.
    let (status, page) = ui.get("/", "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("href=\"/runs/{run_id}\"")), "{page}");
    let (status, page) = ui.get(&format!("/runs/{run_id}"), "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    for raw in ["<script>alert", "<img src=x", "onerror=alert(2)>"] {
        assert!(!page.contains(raw), "{raw} reached the page unescaped");
    }
    for section in [
        "Timeline",
        "Tokens",
        "Agent events",
        "Steps",
        "Logs",
        "Ledger",
        "Attempts",
    ] {
        assert!(
            page.contains(&format!(">{section}<")),
            "no {section} section"
        );
    }
    assert!(
        page.contains("<svg"),
        "the timeline and token chart are SVG"
    );

    // The JSON API behind them.
    let runs = ui.json("/api/runs");
    assert_eq!(runs[0]["runId"], Value::String(run_id.clone()));
    assert_eq!(runs[0]["state"], "completed");
    assert_eq!(runs[0]["attempts"], 1);
    let run = ui.json(&format!("/api/runs/{run_id}"));
    assert_eq!(run["run"]["args"]["text"], HOSTILE);
    assert_eq!(run["steps"][0]["kind"], "agent");
    assert_eq!(run["steps"][0]["number"], 1);
    assert_eq!(run["steps"][0]["phase"], HOSTILE);
    assert_eq!(run["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(
        run["tokenUsage"]["outputTokens"], run["ledger"][0]["outputTokens"],
        "the usage is what the ledger spent"
    );
    assert!(run["tokenUsage"]["outputTokens"].as_u64().unwrap() > 0);
    assert!(
        run["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["type"] == "workflow.log"),
        "{}",
        run["events"]
    );
    assert_eq!(ui.json("/api/runs?state=failed"), Value::Array(Vec::new()));
    assert_eq!(
        ui.json("/api/runs?name=hostile").as_array().unwrap().len(),
        1
    );
    assert_eq!(ui.json("/api/runs?name=other").as_array().unwrap().len(), 0);
    assert_eq!(
        ui.json(&format!("/api/runs?q={run_id}"))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ui.json("/api/runs?q=run_nothing").as_array().unwrap().len(),
        0
    );
    assert_eq!(ui.json("/api/runs?since=1h").as_array().unwrap().len(), 1);
    assert_eq!(ui.get("/api/runs?since=soon", "").0, 400);
    assert_eq!(ui.get("/api/runs?state=sideways", "").0, 400);
    assert_eq!(ui.get("/runs/run_missing", "").0, 404);
    assert_eq!(ui.get("/api/runs/run_missing", "").0, 404);
    assert_eq!(ui.get("/nothing", "").0, 404);

    // No path reaches a file other than the two assets.
    assert_eq!(ui.get("/assets/inspector.js", "").0, 200);
    assert_eq!(ui.get("/assets/inspector.css", "").0, 200);
    for path in [
        "/runs/../../etc/passwd",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e%2fmain.rs",
        "/assets/..%2f..%2fCargo.toml",
    ] {
        assert_eq!(ui.get(path, "").0, 404, "{path}");
    }

    // A page on another site that resolves its name to 127.0.0.1 reads nothing.
    let mut stream = TcpStream::connect(("127.0.0.1", ui.port)).unwrap();
    write!(
        stream,
        "GET /api/runs HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // Another site may not frame the pages or run scripts in them.
    let mut stream = TcpStream::connect(("127.0.0.1", ui.port)).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(head.contains("frame-ancestors 'none'"), "{head}");

    // The live stream: stored events with their positions.
    let mut stream = TcpStream::connect(("127.0.0.1", ui.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buffer = [0_u8; 4096];
    while !seen.contains("workflow.result") {
        let read = stream.read(&mut buffer).expect("the stream sends");
        assert!(read > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(
        seen.contains("\nid: 1\n") || seen.contains("\nid: "),
        "{seen}"
    );
    assert!(seen.contains("workflow.started"), "{seen}");
    drop(stream);

    // A waiting run: its form, refused payloads with the schema's errors, then the answer.
    let waiting = waiting_run(cli, &ui, HOSTILE);
    let waiting_id = waiting.run_id.clone();
    let runs = ui.json("/api/runs?state=waiting");
    assert_eq!(runs[0]["runId"], Value::String(waiting_id.clone()));
    assert_eq!(runs[0]["waitingOn"][0], "review");
    let (status, page) = ui.get("/waits", "");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "data-signal=\"/api/runs/{waiting_id}/signals/review\""
        )),
        "{page}"
    );
    assert!(
        page.contains("<select name=\"decision\""),
        "an enum is a choice: {page}"
    );
    assert!(
        !page.contains("<script>alert"),
        "the wait's description is escaped"
    );
    let signal = format!("/api/runs/{waiting_id}/signals/review");
    let (status, body) = ui.request("POST", &signal, JSON, r#"{"decision":"maybe"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not match the schema"), "{body}");
    let (status, body) = ui.request("POST", &signal, JSON, "{not json");
    assert_eq!(status, 400, "{body}");
    // Another site's page cannot send it.
    let cross = format!("{JSON}Origin: http://evil.example\r\n");
    let (status, _) = ui.request("POST", &signal, &cross, r#"{"decision":"approve"}"#);
    assert_eq!(status, 403);
    let cross = format!("{JSON}Sec-Fetch-Site: cross-site\r\n");
    assert_eq!(
        ui.request("POST", &signal, &cross, r#"{"decision":"approve"}"#)
            .0,
        403
    );
    let own = format!("{JSON}Origin: http://localhost\r\n");
    let (status, body) = ui.request("POST", &signal, &own, r#"{"decision":"approve"}"#);
    assert_eq!(status, 200, "{body}");
    let receipt: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(receipt["delivered"], true, "{receipt}");
    wait_for_state(&ui, &waiting_id, "completed");
    drop(waiting);

    // Cancel a waiting run; its process stops it.
    let waiting = waiting_run(cli, &ui, "to be cancelled");
    let cancel = format!("/api/runs/{}/cancel", waiting.run_id);
    let (status, body) = ui.request("POST", &cancel, "", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"outcome\""), "{body}");
    wait_for_state(&ui, &waiting.run_id, "cancelled");
    let (status, body) = ui.request("POST", &signal, JSON, r#"{"decision":"approve"}"#);
    assert_eq!(status, 409, "a finished run takes no signal: {body}");
    drop(waiting);

    // Fork from a step: queued for workers, with the command that runs it here.
    let (status, body) = ui.request(
        "POST",
        &format!("/api/runs/{run_id}/fork"),
        JSON,
        r#"{"beforeStep":"1"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let fork: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fork["queued"], true);
    assert!(
        fork["localCommand"]
            .as_str()
            .unwrap()
            .contains("--before-step 1"),
        "{fork}"
    );
    let forked = ui.json(&format!("/api/runs/{}", fork["runId"].as_str().unwrap()));
    assert_eq!(forked["run"]["state"], "pending");
    assert_eq!(
        forked["run"]["forkedFrom"]["runId"],
        Value::String(run_id.clone())
    );
    let (status, _) = ui.request(
        "POST",
        &format!("/api/runs/{run_id}/fork"),
        JSON,
        r#"{"before":"1"}"#,
    );
    assert_eq!(status, 400, "unknown fields are refused");

    // Delete: refused while unfinished, then everything goes.
    let pending = fork["runId"].as_str().unwrap();
    assert_eq!(
        ui.request("DELETE", &format!("/api/runs/{pending}"), "", "")
            .0,
        409
    );
    let (status, body) = ui.request("DELETE", &format!("/api/runs/{run_id}"), "", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(ui.get(&format!("/api/runs/{run_id}"), "").0, 404);
}

#[test]
fn sqlite_every_page_route_and_action() {
    every_route_and_action(&Cli::new());
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[test]
fn postgres_every_page_route_and_action() {
    every_route_and_action(&Cli::with_database(fresh_postgres_database()));
}

/// A new, empty database on the test server.
fn fresh_postgres_database() -> String {
    let url = smol_durable_testkit::postgres_test_url("ui");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = format!("ui_{}", ulid::Ulid::new().to_string().to_lowercase());
    runtime.block_on(async {
        let admin = smol_durable_postgres::PostgresStore::connect(&url)
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await
            .expect("create database");
    });
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

#[test]
fn a_read_only_inspector_offers_and_takes_no_action() {
    let cli = Cli::new();
    let run_id = hostile_run(&cli);
    let ui = Inspector::start(&cli, &["--listen", "127.0.0.1:0", "--read-only"]);
    let (status, page) = ui.get(&format!("/runs/{run_id}"), "");
    assert_eq!(status, 200);
    assert!(!page.contains("data-action"), "no buttons: {page}");
    assert!(page.contains("read-only"), "{page}");
    let (status, body) = ui.request("DELETE", &format!("/api/runs/{run_id}"), "", "");
    assert_eq!(status, 403, "{body}");
    let (status, _) = ui.request("POST", &format!("/api/runs/{run_id}/fork"), JSON, "{}");
    assert_eq!(status, 403);
    assert_eq!(
        ui.json("/api/runs").as_array().unwrap().len(),
        1,
        "nothing changed"
    );
}

#[test]
fn any_address_but_loopback_needs_the_printed_token() {
    let cli = Cli::new();
    let run_id = hostile_run(&cli);
    let ui = Inspector::start(&cli, &["--listen", "0.0.0.0:0"]);
    let token = ui
        .query
        .strip_prefix("?token=")
        .unwrap_or_else(|| panic!("no token in {:?}", ui.query))
        .to_owned();
    assert!(token.len() > 20, "a token nobody guesses");
    assert_eq!(ui.get("/", "").0, 401);
    assert_eq!(ui.get("/api/runs", "").0, 401);
    assert_eq!(ui.get("/assets/inspector.js", "").0, 401);
    assert_eq!(ui.get("/api/runs?token=wrong", "").0, 401);
    let (status, page) = ui.get(&format!("/?token={token}"), "");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("?token={token}")),
        "links keep the token"
    );
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(ui.get("/api/runs", &bearer).0, 200);
    // A change needs the token too; with it, no Origin check is needed.
    let delete = format!("/api/runs/{run_id}");
    assert_eq!(ui.request("DELETE", &delete, "", "").0, 401);
    assert_eq!(ui.request("DELETE", &delete, &bearer, "").0, 200);
}
