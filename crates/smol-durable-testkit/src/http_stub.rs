//! A scripted HTTP/1.1 server on 127.0.0.1 for testing HTTP providers without a network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One canned answer.
#[derive(Debug, Clone)]
pub struct StubResponse {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers (`Content-Type: application/json` is always sent).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Wait this long before answering (to test timeouts).
    pub delay: Duration,
}

impl StubResponse {
    /// A JSON answer with `status`.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub struct StubRequest {
    /// `POST /v1/chat/completions` and so on.
    pub request_line: String,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl StubRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Answers requests with the scripted responses in order (the last one repeats), one
/// connection per request, and records what it received.
///
/// ```
/// use serde_json::json;
/// use smol_durable_testkit::{StubHttpServer, StubResponse};
///
/// let server = StubHttpServer::start(vec![StubResponse::json(200, json!({ "ok": true }))]);
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// ```
#[derive(Debug)]
pub struct StubHttpServer {
    url: String,
    requests: Arc<Mutex<Vec<StubRequest>>>,
    _accept: JoinHandle<()>,
}

impl StubHttpServer {
    /// Listens on an ephemeral port of 127.0.0.1.
    ///
    /// # Panics
    /// When no local port can be bound (a broken test machine).
    #[allow(clippy::expect_used)]
    pub fn start(responses: Vec<StubResponse>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the bound address")
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let accept = std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let response = responses
                    .get(index)
                    .or_else(|| responses.last())
                    .cloned()
                    .unwrap_or_else(|| StubResponse::json(500, serde_json::json!({})));
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || serve(stream, &response, &recorded));
            }
        });
        Self {
            url,
            requests,
            _accept: accept,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What was received so far, in arrival order.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }
}

fn serve(stream: TcpStream, response: &StubResponse, recorded: &Mutex<Vec<StubRequest>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if let Ok(mut requests) = recorded.lock() {
        requests.push(StubRequest {
            request_line: request_line.trim().to_owned(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    std::thread::sleep(response.delay);
    let mut head = format!(
        "HTTP/1.1 {} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = writer.write_all(head.as_bytes());
    let _ = writer.write_all(response.body.as_bytes());
    let _ = writer.flush();
}
