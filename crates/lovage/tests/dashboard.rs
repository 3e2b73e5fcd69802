//! The dashboard in a real headless Chromium (Debian's chromium and chromedriver, installed by
//! scripts/deps), driven over WebDriver: log in with a token, send `lovage.sleep [1]` from
//! Submit and watch its page go from unfinished to SUCCESS without a reload, revoke a
//! `lovage.sleep [60]`, no console errors; screenshots land in target/dashboard-shots/.

mod common;

#[path = "../../lovage-server/tests/common/http.rs"]
mod http;

use common::Killed;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Client;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");
const TOKEN: &str = "dashboard-test-admin-token";

struct Driver {
    http: Client,
    session: String,
    _child: Killed,
}

impl Driver {
    fn start() -> Option<Driver> {
        if Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_err()
        {
            common::skip("no chromedriver (scripts/deps installs chromium-driver)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Killed(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let http = Client::new(addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--hide-scrollbars"]}}}});
        let r = http.post("/session", &caps.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        let session = r.json()["value"]["sessionId"].as_str().unwrap().to_owned();
        Some(Driver {
            http,
            session,
            _child: child,
        })
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = body.to_string();
        let r = self
            .http
            .request(method, &path, (method != "GET").then_some(body.as_bytes()));
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Evaluates `script` until it returns something truthy, for up to 30 s.
    fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([]));
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", Value::Null);
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("dashboard-shots");
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = decode_base64(png.as_str().unwrap());
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .http
            .request("DELETE", &format!("/session/{}", self.session), None);
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn log_in_submit_watch_it_finish_and_revoke_in_a_real_browser() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let tokens = dir.path().join("tokens");
    let mut h = Command::new(BIN)
        .args(["server", "--hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    h.stdin.take().unwrap().write_all(TOKEN.as_bytes()).unwrap();
    let line = h.wait_with_output().unwrap().stdout;
    std::fs::write(&tokens, line).unwrap();
    let mut server = Killed(
        Command::new(BIN)
            .args(["server", "--bind", "127.0.0.1:0", "--token-file"])
            .arg(&tokens)
            .env("LOVAGE_BROKER", &url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("lovage server listening on ")
        .unwrap()
        .to_owned();
    let _worker = Killed(
        Command::new(BIN)
            .args(["worker", "--concurrency", "2", "--resources", "gpu=1"])
            .env("LOVAGE_BROKER", &url)
            .env("LOVAGE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // A beat, so the Schedule page has entries to show (its queue has no consumer).
    let schedule = dir.path().join("beat.toml");
    std::fs::write(
        &schedule,
        "[[entry]]\nname = \"digest\"\ntask = \"lovage.sleep\"\nargs = [0]\nevery = \"1m\"\nqueue = \"beat\"\n\n\
         [[entry]]\nname = \"nightly-report\"\ntask = \"lovage.shell\"\nargs = [[\"true\"]]\n\
         cron = \"30 2 * * *\"\nqueue = \"beat\"\n",
    )
    .unwrap();
    let _beat = Killed(
        Command::new(BIN)
            .args(["beat", "--schedule"])
            .arg(&schedule)
            .env("LOVAGE_BROKER", &url)
            .env("LOVAGE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    driver.go(&base);
    driver.wait(
        "the login form",
        "return !!document.getElementById('token')",
    );
    driver.screenshot("login");
    driver.js(
        "document.getElementById('token').value = arguments[0]; document.getElementById('login-btn').click();",
        json!([TOKEN]),
    );
    driver.wait(
        "the overview after login",
        "return document.querySelector('h1') && document.querySelector('h1').textContent === 'Overview'",
    );
    // A marker that a reload would wipe.
    driver.js("window.__stayed = true;", json!([]));

    driver.go(&format!("{base}#/submit"));
    driver.wait(
        "the submit form",
        "return !!document.getElementById('f-send')",
    );
    driver.js(
        "document.getElementById('f-name').value = 'lovage.sleep'; document.getElementById('f-args').value = '[1]'; document.getElementById('f-send').click();",
        json!([]),
    );
    driver.wait(
        "the task page",
        "return location.hash.startsWith('#/task/') && !!document.getElementById('task-state')",
    );
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = driver
            .js(
                "const e = document.getElementById('task-state'); return e ? e.textContent : '';",
                json!([]),
            )
            .as_str()
            .unwrap_or("")
            .to_owned();
        if !s.is_empty() && seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "SUCCESS" {
            break;
        }
        assert!(Instant::now() < deadline, "never saw SUCCESS; saw {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.len() >= 2,
        "saw only {seen:?}: the page should show it unfinished first"
    );
    assert!(
        ["PENDING", "RECEIVED", "STARTED"].contains(&seen[0].as_str()),
        "{seen:?}"
    );
    assert_eq!(
        driver.js("return window.__stayed === true", json!([])),
        json!(true),
        "the page reloaded"
    );
    driver.screenshot("task-success");

    // Revoke a long one from its page.
    let api = Client::new(
        base.trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap(),
    )
    .bearer(TOKEN);
    let r = api.post("/api/v1/tasks", r#"{"name":"lovage.sleep","args":[60]}"#);
    let id = r.json()["task_id"].as_str().unwrap().to_owned();
    driver.go(&format!("{base}#/task/{id}"));
    driver.wait(
        "the revoke button",
        "return !!document.getElementById('revoke')",
    );
    driver.js(
        "window.confirm = () => true; document.getElementById('revoke').click();",
        json!([]),
    );
    driver.wait(
        "REVOKED",
        "const e = document.getElementById('task-state'); return e && e.textContent === 'REVOKED'",
    );
    driver.screenshot("task-revoked");

    // A failure, so the Dead letters page has a letter to show (and later to discard).
    let r = api.post(
        "/api/v1/tasks",
        r#"{"name":"lovage.shell","args":[["false"]]}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/api/v1/dead").json()["total"] != 1 {
        assert!(Instant::now() < deadline, "no dead letter within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    for page in [
        "overview", "workers", "tasks", "queues", "dead", "types", "submit", "schedule",
    ] {
        driver.go(&format!("{base}#/{page}"));
        driver.wait(page, "return !!document.querySelector('main h1')");
        if page == "schedule" {
            // The beat's entries, with a next run counting down.
            driver.wait(
                "the beat's entries",
                "const n = document.querySelector('main .next'); return !!n && n.textContent.startsWith('in ')",
            );
        }
        if page == "types" {
            driver.wait(
                "lovage.sleep's counts",
                "const t = document.getElementById('task-types'); return !!t && t.textContent.includes('lovage.sleep')",
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        driver.screenshot(page);
    }
    // The pages this issue added, in the light theme too.
    for page in ["schedule", "types"] {
        driver.go(&format!("{base}#/{page}"));
        driver.wait(page, "return !!document.querySelector('main table')");
        driver.js("document.getElementById('theme').click();", json!([]));
        std::thread::sleep(Duration::from_millis(300));
        driver.screenshot(&format!("{page}-light"));
        driver.js("document.getElementById('theme').click();", json!([]));
    }
    // A worker's page: what it runs and holds and its registered tasks, asked through its
    // mailbox; in both themes.
    driver.go(&format!("{base}#/workers"));
    driver.wait(
        "a worker link",
        "return !!document.querySelector('main a[href^=\"#/worker/\"]')",
    );
    driver.js(
        "document.querySelector('main a[href^=\"#/worker/\"]').click();",
        json!([]),
    );
    driver.wait(
        "the worker's registered tasks",
        "const t = document.getElementById('registered'); return !!t && t.textContent.includes('lovage.sleep')",
    );
    driver.wait(
        "the worker's resources",
        "const kv = document.querySelector('main .kv'); return !!kv && kv.textContent.includes('gpu=1')",
    );
    std::thread::sleep(Duration::from_millis(300));
    driver.screenshot("worker");
    driver.js("document.getElementById('theme').click();", json!([]));
    std::thread::sleep(Duration::from_millis(300));
    driver.screenshot("worker-light");
    driver.js("document.getElementById('theme').click();", json!([]));

    // Delete a waiting task (its queue has no consumer) with the Tasks page's bulk action.
    let r = api.post(
        "/api/v1/tasks",
        r#"{"name":"lovage.sleep","args":[1],"queue":"nobody"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["task_id"].as_str().unwrap().to_owned();
    driver.go(&format!("{base}#/tasks"));
    driver.wait(
        "the waiting task's checkbox",
        &format!("return !!document.querySelector('.pick[value=\"{id}\"]')"),
    );
    driver.js(
        "window.confirm = () => true; document.querySelector(`.pick[value=\"${arguments[0]}\"]`).checked = true; document.getElementById('bulk-delete').click();",
        json!([id]),
    );
    driver.wait(
        "the deleted task gone from the list",
        &format!("return !!document.getElementById('bulk-delete') && !document.querySelector('.pick[value=\"{id}\"]')"),
    );
    let gone = api.get(&format!("/api/v1/tasks/{id}")).json();
    assert!(gone["queue"].is_null(), "deleted: {gone}");

    // Discard the dead letter from its row.
    driver.go(&format!("{base}#/dead"));
    driver.wait(
        "a Discard button",
        "return [...document.querySelectorAll('main button')].some((b) => b.textContent === 'Discard')",
    );
    driver.js(
        "window.confirm = () => true; [...document.querySelectorAll('main button')].find((b) => b.textContent === 'Discard').click();",
        json!([]),
    );
    driver.wait(
        "the letter gone",
        "return document.querySelector('main h1').textContent.includes('(0)')",
    );
    assert_eq!(api.get("/api/v1/dead").json()["total"], 0);

    let logs = driver.call("POST", "/se/log", json!({"type": "browser"}));
    let errors: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
