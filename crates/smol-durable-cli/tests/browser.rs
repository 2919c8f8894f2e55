//! The inspector in a real browser: Debian's Chromium, headless, driven through ChromeDriver
//! with the `fantoccini` WebDriver client. A person opens the runs list, opens a run and sees
//! its steps; answers a waiting run through the form generated from its schema (first with a
//! value the schema refuses, shown inline) and watches it complete without reloading; cancels
//! a run; sees a coding agent's live events appear while its call runs.
//!
//! `scripts/test` installs Chromium and ChromeDriver when they are missing and names the
//! driver in `SMOL_DURABLE_TEST_CHROMEDRIVER`; without it these tests are built ignored (and
//! fail in CI). Screenshots go to `target/tmp/screenshots/`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::{Cli, Inspector};

/// One browser at a time: two Chromiums on a 2-core machine slow each other past the waits.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// ChromeDriver with one headless Chromium session; both stop when dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let driver_path = std::env::var("SMOL_DURABLE_TEST_CHROMEDRIVER").expect(
            "SMOL_DURABLE_TEST_CHROMEDRIVER names chromedriver: run scripts/test, which installs it",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {driver_path}: {error}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags that keep Chromium from reaching for Google's services on a closed network.
        let mut options = json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let binary = std::env::var("SMOL_DURABLE_TEST_CHROMIUM")
            .ok()
            .or_else(|| {
                Path::new("/usr/bin/chromium")
                    .exists()
                    .then(|| "/usr/bin/chromium".into())
            });
        if let Some(binary) = binary {
            options["binary"] = Value::String(binary);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self {
            driver,
            client: Some(client),
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.expect("navigates");
    }

    /// The text of the first element `css` finds, once there is one.
    async fn text(&self, css: &str) -> String {
        let element = self
            .client()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"));
        element.text().await.unwrap()
    }

    /// Waits until the page's JavaScript expression `condition` is true.
    async fn until(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let value = self
                .client()
                .execute(&format!("return Boolean({condition});"), Vec::new())
                .await
                .expect("runs the script");
            if value == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} never happened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn eval(&self, expression: &str) -> Value {
        self.client()
            .execute(&format!("return {expression};"), Vec::new())
            .await
            .expect("runs the script")
    }

    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"))
            .click()
            .await
            .expect("clicks");
    }

    /// Saves a screenshot as `target/tmp/screenshots/NAME.png`; its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("a screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The example workflows.
fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows")
        .join(name)
        .display()
        .to_string()
}

/// A `run` process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `args` in the background and waits for the newest run to be one other than `before`'s;
/// its id.
fn start_run(cli: &Cli, ui: &Inspector, command: &mut Command) -> (Running, String) {
    let before = ui.json("/api/runs");
    let known: Vec<&str> = before
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|run| run["runId"].as_str())
        .collect();
    let _ = cli;
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the run starts");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = ui.json("/api/runs");
        if let Some(id) = runs[0]["runId"].as_str().filter(|id| !known.contains(id)) {
            return (running, id.to_owned());
        }
        assert!(Instant::now() < deadline, "the run never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A page's marker: set once, still there later only if the page was never reloaded.
const MARK: &str = "window.__notReloaded = 42";
const STILL_MARKED: &str = "window.__notReloaded === 42";

#[cfg_attr(
    smol_durable_no_browser,
    ignore = "no ChromeDriver named: run scripts/test (it installs Chromium and sets SMOL_DURABLE_TEST_CHROMEDRIVER)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_leads_to_a_run_and_its_steps() {
    let _one = ONE_BROWSER.lock().await;
    let cli = Cli::new();
    let output = cli.json(&["run", &example("multi_phase.mjs")]);
    let run_id = output["runID"].as_str().unwrap().to_owned();
    cli.write(
        "hostile.mjs",
        "export const meta = { name: 'hostile' };\n\
         export default await agent(args.text);\n",
    );
    cli.ok(&[
        "run",
        "hostile.mjs",
        "--args-text",
        "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>",
    ]);
    let ui = Inspector::start(&cli, &["--listen", "127.0.0.1:0"]);
    let browser = Browser::start().await;
    browser.goto(&ui.url("/")).await;
    assert_eq!(browser.text("h1").await, "Runs");
    browser.screenshot("runs").await;
    browser.click(&format!("tr[data-run='{run_id}'] a")).await;
    assert!(browser.text("h1").await.starts_with("multi-phase"));
    browser
        .until(
            "document.querySelectorAll('table.steps tbody tr').length === 4",
            "four steps",
        )
        .await;
    let first = browser.text("table.steps tbody tr").await;
    assert!(first.contains("outline tea"), "{first}");
    assert!(browser
        .text("svg.timeline")
        .await
        .contains("plan (2 steps)"));
    browser.screenshot("run").await;
    // Markup in a prompt and a result is shown as text, and none of it runs.
    browser.goto(&ui.url("/")).await;
    browser.click("tr[data-run] a").await;
    let call = browser.text("table.steps tbody tr").await;
    assert!(call.contains("<img src=x"), "{call}");
    assert_eq!(
        browser.eval("window.pwned === undefined").await,
        Value::Bool(true)
    );
    browser.close().await;
}

/// Waits for a score from 1 to 5.
const RATING: &str = r#"import { waitFor } from "workflow:extra";
export const meta = { name: "rating", description: "asks a person for a score" };
phase("draft");
const draft = await agent("Draft a haiku about durable runs");
phase("review");
const answer = await waitFor("score", {
  description: `Rate this draft from 1 to 5: ${draft}`,
  schema: {
    type: "object",
    properties: { score: { type: "integer", minimum: 1, maximum: 5 }, note: { type: "string" } },
    required: ["score"],
  },
});
export default { draft, answer };
"#;

#[cfg_attr(
    smol_durable_no_browser,
    ignore = "no ChromeDriver named: run scripts/test (it installs Chromium and sets SMOL_DURABLE_TEST_CHROMEDRIVER)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_answered_through_its_form_completes_without_a_reload() {
    let _one = ONE_BROWSER.lock().await;
    let cli = Cli::new();
    cli.ok(&["run", &example("hello.mjs"), "--args-name", "Ada"]);
    let script = cli.write("rating.mjs", RATING);
    let ui = Inspector::start(&cli, &["--listen", "127.0.0.1:0"]);
    let (_running, run_id) = start_run(&cli, &ui, &mut cli.command(&["run", &script]));
    let browser = Browser::start().await;
    browser.goto(&ui.url(&format!("/runs/{run_id}"))).await;
    browser
        .until("document.querySelector('form.signal') !== null", "the form")
        .await;
    assert_eq!(browser.text("#run-state").await, "waiting");
    browser.eval(MARK).await;
    // A score the schema refuses: its error shows inline, nothing is sent.
    let score = browser
        .client()
        .find(Locator::Css("form.signal input[name=score]"))
        .await
        .unwrap();
    score.send_keys("9").await.unwrap();
    browser
        .client()
        .find(Locator::Css("form.signal input[name=note]"))
        .await
        .unwrap()
        .send_keys("lovely")
        .await
        .unwrap();
    browser.click("form.signal button[type=submit]").await;
    browser
        .until(
            "document.querySelector('form.signal .note.errors') !== null",
            "an inline error",
        )
        .await;
    let error = browser.text("form.signal .note.errors").await;
    assert!(error.contains("does not match the schema"), "{error}");
    assert!(error.contains('9') || error.contains("maximum"), "{error}");
    browser.screenshot("waiting").await;
    score.clear().await.unwrap();
    score.send_keys("4").await.unwrap();
    browser.click("form.signal button[type=submit]").await;
    browser
        .until(
            "document.querySelector('#run-state').textContent.trim() === 'completed'",
            "the run completing on the page",
        )
        .await;
    assert_eq!(
        browser.eval(STILL_MARKED).await,
        Value::Bool(true),
        "no reload"
    );
    let result = browser.text("#outcome").await;
    assert!(result.contains("\"score\": 4"), "{result}");
    assert!(result.contains("lovely"), "{result}");
    browser.screenshot("answered").await;
    browser.close().await;
}

#[cfg_attr(
    smol_durable_no_browser,
    ignore = "no ChromeDriver named: run scripts/test (it installs Chromium and sets SMOL_DURABLE_TEST_CHROMEDRIVER)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_cancelled_from_its_page() {
    let _one = ONE_BROWSER.lock().await;
    let cli = Cli::new();
    cli.ok(&["run", &example("hello.mjs"), "--args-name", "Ada"]);
    let ui = Inspector::start(&cli, &["--listen", "127.0.0.1:0"]);
    let (_running, run_id) = start_run(
        &cli,
        &ui,
        &mut cli.command(&["run", &example("approval.mjs")]),
    );
    let browser = Browser::start().await;
    browser.goto(&ui.url(&format!("/runs/{run_id}"))).await;
    browser
        .until("document.querySelector('form.signal') !== null", "the wait")
        .await;
    browser.eval(MARK).await;
    browser.click("button[data-action$='/cancel']").await;
    browser
        .client()
        .accept_alert()
        .await
        .expect("the confirmation");
    browser
        .until(
            "document.querySelector('#run-state').textContent.trim() === 'cancelled'",
            "the run cancelled on the page",
        )
        .await;
    assert_eq!(
        browser.eval(STILL_MARKED).await,
        Value::Bool(true),
        "no reload"
    );
    assert_eq!(
        browser
            .eval("document.querySelector(\"button[data-action$='/cancel']\") === null")
            .await,
        Value::Bool(true),
        "a finished run offers no cancel"
    );
    let run = ui.json(&format!("/api/runs/{run_id}"));
    assert_eq!(run["run"]["state"], "cancelled");
    browser.close().await;
}

#[cfg_attr(
    smol_durable_no_browser,
    ignore = "no ChromeDriver named: run scripts/test (it installs Chromium and sets SMOL_DURABLE_TEST_CHROMEDRIVER)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_agents_live_events_appear_while_its_call_runs() {
    let _one = ONE_BROWSER.lock().await;
    let cli = Cli::new();
    cli.ok(&["run", &example("hello.mjs"), "--args-name", "Ada"]);
    let script = cli.write(
        "agent.mjs",
        "export const meta = { name: 'coding' };\n\
         phase('work');\n\
         export default await agent('list the files', { provider: 'claude-code' });\n",
    );
    let fakes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../smol-durable-agents/tests/fakes");
    let path = format!(
        "{}:{}",
        fakes.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ui = Inspector::start(&cli, &["--listen", "127.0.0.1:0"]);
    let browser = Browser::start().await;
    let mut command = cli.command(&["run", &script]);
    // Slow lines: the page is open before the fake has printed its events.
    command
        .env("PATH", path)
        .env("FAKE_AGENT_LINE_DELAY", "1.5");
    let (_running, run_id) = start_run(&cli, &ui, &mut command);
    browser.goto(&ui.url(&format!("/runs/{run_id}"))).await;
    browser.eval(MARK).await;
    const AGENT_EVENTS: &str = "Array.from(document.querySelectorAll('#agent-events tr')).filter(row => row.textContent.includes('agent_event')).length";
    let before = browser.eval(AGENT_EVENTS).await.as_i64().unwrap_or(0);
    browser
        .until(
            &format!("{AGENT_EVENTS} > {before}"),
            "a new live agent event",
        )
        .await;
    assert_eq!(
        browser.eval(STILL_MARKED).await,
        Value::Bool(true),
        "no reload"
    );
    browser.screenshot("agent-events").await;
    browser
        .until(
            "document.querySelector('#run-state').textContent.trim() === 'completed'",
            "the call completing",
        )
        .await;
    browser.close().await;
}
