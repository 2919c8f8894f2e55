//! `smol-durable ui` over HTTP (a first slice of the inspector: the runs list, a run's page and
//! their JSON API): hostile text from the store is escaped, a missing run is a 404, and an
//! address other than loopback needs the token it prints.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Child;

use serde_json::Value;
use support::Cli;

/// Script text that would run in a page if it were not escaped.
const HOSTILE: &str =
    r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>javascript:alert(3)"#;

/// The inspector, killed when dropped.
struct Inspector {
    child: Child,
    port: u16,
    /// `?token=…` when the URL it printed has one.
    query: String,
}

impl Inspector {
    fn start(cli: &Cli, listen: &str) -> Self {
        let mut child = cli.spawn(&["ui", "--listen", listen]);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the URL line");
        let url = line
            .trim()
            .strip_prefix("smol-durable ui: http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (host, rest) = url.split_once('/').expect("a path");
        let port = host.rsplit(':').next().unwrap().parse().expect("a port");
        Self {
            child,
            port,
            query: rest.to_owned(),
        }
    }

    /// `GET path` with extra header lines; the status code and the body.
    fn get(&self, path: &str, headers: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A completed run whose prompt, arguments and result carry [`HOSTILE`]; its id.
fn hostile_run(cli: &Cli) -> String {
    cli.write(
        "hostile.mjs",
        "export const meta = { name: 'hostile', description: 'markup everywhere' };\n\
         export default await agent(`say ${args.text}`);\n",
    );
    let output = cli.json(&["run", "hostile.mjs", "--args-text", HOSTILE]);
    output["runID"].as_str().expect("runID").to_owned()
}

#[test]
fn pages_and_api_show_runs_with_everything_from_the_store_escaped() {
    let cli = Cli::new();
    let run_id = hostile_run(&cli);
    let ui = Inspector::start(&cli, "127.0.0.1:0");
    assert_eq!(ui.query, "", "loopback needs no token");
    let (status, page) = ui.get("/", "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("href=\"/runs/{run_id}\"")), "{page}");
    assert!(page.contains("hostile"), "{page}");
    let (status, page) = ui.get(&format!("/runs/{run_id}"), "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    for raw in ["<script>alert", "<img src=x", "onerror=alert(2)>"] {
        assert!(!page.contains(raw), "{raw} reached the page unescaped");
    }
    let (status, body) = ui.get("/api/runs", "");
    assert_eq!(status, 200);
    let runs: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(runs[0]["runId"], Value::String(run_id.clone()));
    assert_eq!(runs[0]["state"], "completed");
    let (status, body) = ui.get(&format!("/api/runs/{run_id}"), "");
    assert_eq!(status, 200);
    let run: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(run["run"]["args"]["text"], HOSTILE);
    assert_eq!(run["steps"][0]["kind"], "agent");
    assert_eq!(run["steps"][0]["number"], 1);
    // Filters, and what is not there.
    let (_, body) = ui.get("/api/runs?state=failed", "");
    assert_eq!(body, "[]");
    let (status, body) = ui.get("/api/runs?state=sideways", "");
    assert_eq!(status, 400, "{body}");
    assert_eq!(ui.get("/runs/run_missing", "").0, 404);
    assert_eq!(ui.get("/api/runs/run_missing", "").0, 404);
    assert_eq!(ui.get("/runs/../../etc/passwd", "").0, 404);
    assert_eq!(ui.get("/nothing", "").0, 404);
}

#[test]
fn any_address_but_loopback_needs_the_printed_token() {
    let cli = Cli::new();
    hostile_run(&cli);
    let ui = Inspector::start(&cli, "0.0.0.0:0");
    let token = ui
        .query
        .strip_prefix("?token=")
        .unwrap_or_else(|| panic!("no token in {:?}", ui.query))
        .to_owned();
    assert!(token.len() > 20, "a token nobody guesses");
    assert_eq!(ui.get("/", "").0, 401);
    assert_eq!(ui.get("/api/runs", "").0, 401);
    assert_eq!(ui.get("/api/runs?token=wrong", "").0, 401);
    let (status, page) = ui.get(&format!("/?token={token}"), "");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("?token={token}")),
        "links keep the token"
    );
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(ui.get("/api/runs", &bearer).0, 200);
}
