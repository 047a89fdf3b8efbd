//! A `blockspec serve` child process on a free port, driven over HTTP (ureq), for the server
//! tests.

use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server on a free port, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    key: Option<String>,
    log: tempfile::NamedTempFile,
}

impl Server {
    pub fn start(model: &Path, args: &[&str]) -> Server {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_blockspec"))
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start blockspec serve");
        let key = args
            .iter()
            .position(|a| *a == "--api-key")
            .map(|i| args[i + 1].to_string());
        let mut s = Server {
            child,
            base: String::new(),
            key,
            log,
        };
        let t0 = Instant::now();
        // The port is printed as soon as the listener is up (before the model has loaded).
        while s.base.is_empty() {
            let text = s.log_text();
            if let Some(i) = text.find("listening on http://") {
                let rest = &text[i + "listening on ".len()..];
                s.base = rest.split_whitespace().next().unwrap_or("").to_string();
            }
            s.check_alive();
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no listener: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // /health: 503 while loading, then 200; nothing else.
        loop {
            let (status, body) = s.get("/health");
            match status {
                200 => {
                    assert_eq!(
                        serde_json::from_str::<Value>(&body).unwrap()["status"],
                        "ok"
                    );
                    break;
                }
                503 => {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["error"]["code"], 503, "{body}");
                }
                other => panic!("/health answered {other}: {body}"),
            }
            s.check_alive();
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "model never loaded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn check_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("server exited ({st}): {}", self.log_text());
        }
    }

    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = ureq::request(method, &format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.set("Authorization", &format!("Bearer {k}")),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        answer(self.request("GET", path).call())
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        answer(
            self.request("POST", path)
                .set("Content-Type", "application/json")
                .send_string(body),
        )
    }

    /// POST JSON; (status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, &body.to_string());
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, v)
    }

    /// POST JSON expecting 200.
    pub fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, body);
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    /// A streamed request: the `data:` payloads in order (`[DONE]` as a JSON string).
    pub fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let resp = self
            .request("POST", path)
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.content_type(), "text/event-stream");
        let mut text = String::new();
        resp.into_reader()
            .read_to_string(&mut text)
            .expect("read stream");
        sse_events(&text)
    }

    pub fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Parse an SSE body: every event must be one `data: ...` line followed by a blank line.
pub fn sse_events(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let payload = block
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data event: {block:?}"));
        assert!(!payload.contains('\n'), "multi-line event: {block:?}");
        out.push(if payload == "[DONE]" {
            json!("[DONE]")
        } else {
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload}"))
        });
    }
    out
}
