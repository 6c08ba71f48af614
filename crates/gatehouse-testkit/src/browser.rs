//! Headless Chromium driven through ChromeDriver's WebDriver API (Debian's `chromium`
//! and `chromium-driver`), for tests of pages the gateway serves: load a page, run a
//! script in it, read the browser's console and network logs. The driver is stopped
//! by its PID, after it closed its browser.

use crate::Client;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A ChromeDriver process and one browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    client: Client,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium that logs console messages and
    /// network events.
    pub async fn start() -> Self {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let client = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = http::Request::get(format!("{base}/status")).body(Full::default());
            if let Ok(r) = client.send(probe.unwrap()).await
                && r.status == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("gatehouse-chromium-{port}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-default-apps",
                         format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let mut b = Self {
            driver,
            port,
            session: String::new(),
            client,
            profile,
        };
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(data)))
            .unwrap();
        let r = self.client.send(req).await.expect("webdriver call");
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url` (returns when the page's load event fired).
    pub async fn goto(&self, url: &str) {
        let path = self.session_path("/url");
        let v = self.call("POST", &path, Some(json!({"url": url}))).await;
        assert!(v["value"].is_null(), "navigation failed: {v}");
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn execute(&self, script: &str) -> Value {
        let path = self.session_path("/execute/sync");
        let v = self
            .call("POST", &path, Some(json!({"script": script, "args": []})))
            .await;
        v["value"].clone()
    }

    /// Runs `script` until it returns true, at most `within`.
    pub async fn wait_for(&self, script: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.execute(script).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The entries of a log (`browser`: the console; `performance`: DevTools events)
    /// since the last read.
    pub async fn log(&self, kind: &str) -> Vec<Value> {
        let path = self.session_path("/se/log");
        let v = self.call("POST", &path, Some(json!({"type": kind}))).await;
        v["value"].as_array().cloned().unwrap_or_default()
    }

    /// The URLs the page requested, from the DevTools network events.
    pub async fn requested_urls(&self) -> Vec<String> {
        self.log("performance")
            .await
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| {
                Some(
                    m["message"]["params"]["request"]["url"]
                        .as_str()?
                        .to_string(),
                )
            })
            .collect()
    }
}

/// Ends the session (the driver closes its browser), then stops the driver by its PID.
impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty()
            && let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                self.session
            );
            let _ = s.write_all(req.as_bytes());
            // The answer comes once the browser is closed; the driver may keep the
            // connection open after it, so only its head is awaited.
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
