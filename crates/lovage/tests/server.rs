//! `lovage server` as a process, with two real `lovage worker` processes, on SQLite and on
//! Redis: tasks sent over the API run, fail, are retried and revoked; the server killed -9 and
//! started again shows the same tasks and counts (it keeps no state of its own).

mod common;

#[path = "../../lovage-server/tests/common/http.rs"]
mod http;

use common::{Killed, RedisPrefix};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Client;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lovage");
const ADMIN: &str = "server-test-admin-token";
const READ: &str = "server-test-read-token";

struct Env {
    dir: tempfile::TempDir,
    url: String,
    _redis: Option<RedisPrefix>,
}

impl Env {
    fn sqlite() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        Env {
            dir,
            url,
            _redis: None,
        }
    }

    fn redis() -> Env {
        let redis = RedisPrefix::new();
        Env {
            dir: tempfile::tempdir().unwrap(),
            url: redis.url(),
            _redis: Some(redis),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("LOVAGE_BROKER", &self.url)
            .env("LOVAGE_LOG", "warn");
        c
    }

    /// A token file with a read and an admin token, hashed by `lovage server --hash-token`.
    fn token_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("tokens");
        let mut lines = String::new();
        for (scope, token) in [("read", READ), ("admin", ADMIN)] {
            let mut c = self
                .cmd(&["server", "--hash-token"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let line = String::from_utf8(out.stdout).unwrap();
            lines.push_str(&line.replacen("admin", scope, 1));
        }
        std::fs::write(&path, lines).unwrap();
        path
    }

    /// Starts `lovage server` on an ephemeral port; returns it and its address.
    fn server(&self, tokens: &std::path::Path) -> (Killed, SocketAddr) {
        let tokens = tokens.to_str().unwrap();
        self.server_with(&["--bind", "127.0.0.1:0", "--token-file", tokens])
    }

    /// Starts `lovage server ARGS` (which bind port 0); returns it and its address.
    fn server_with(&self, args: &[&str]) -> (Killed, SocketAddr) {
        let mut child = Killed(
            self.cmd(&["server"])
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("lovage server listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        (child, addr)
    }

    fn worker(&self) -> Killed {
        Killed(
            self.cmd(&["worker", "--concurrency", "2", "--events"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// Polls `f` until it gives a value, for up to 60 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(c: &Client, body: &str) -> String {
    let r = c.post("/api/v1/tasks", body);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["task_id"].as_str().unwrap().to_owned()
}

fn result(c: &Client, id: &str) -> Value {
    let r = c.get(&format!("/api/v1/tasks/{id}/result?wait=30s"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn api_with_real_workers(env: Env) {
    let tokens = env.token_file();
    let (mut server, addr) = env.server(&tokens);
    let _w1 = env.worker();
    let _w2 = env.worker();
    let anon = Client::new(addr);
    let admin = anon.bearer(ADMIN);
    let read = anon.bearer(READ);
    assert_eq!(anon.get("/api/v1/overview").status, 401);
    assert_eq!(
        read.post("/api/v1/tasks", r#"{"name":"lovage.sleep","args":[0]}"#)
            .status,
        403
    );

    let workers = eventually("two workers online", || {
        let o = read.get("/api/v1/overview").json();
        (o["workers"]["online"] == 2).then_some(o)
    });
    assert_eq!(workers["workers"]["offline"], 0);
    let ws = read.get("/api/v1/workers").json();
    let first = ws[0]["id"].as_str().unwrap().to_owned();
    let one = read.get(&format!("/api/v1/workers/{}", first));
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["online"], true);

    // Success, seen live on the event stream as the workers publish it.
    let mut stream = read.events("/api/v1/events?types=task-succeeded");
    assert_eq!(stream.status, 200);
    let ok = send(&admin, r#"{"name":"lovage.sleep","args":[0.2]}"#);
    let e = stream.next();
    assert_eq!(e.event, "task-succeeded", "{e:?}");
    let data: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data["task_id"], ok.as_str(), "{data}");
    assert_eq!(data["name"], "lovage.sleep");
    let r = result(&admin, &ok);
    assert_eq!(r["state"], "SUCCESS", "{r}");
    assert_eq!(r["result"], 0.2);
    assert!(r["worker"].is_string() && r["runtime_ms"].is_i64(), "{r}");

    // Failure, dead-lettered; retried as a new linked task that fails the same way.
    let bad = send(&admin, r#"{"name":"lovage.shell","args":[["false"]]}"#);
    let r = result(&admin, &bad);
    assert_eq!(r["state"], "FAILURE", "{r}");
    assert!(r["error"]["message"].as_str().is_some(), "{r}");
    let dead = eventually("the dead letter", || {
        let d = read.get("/api/v1/dead?group_by=task").json();
        (d["total"] == 1).then_some(d)
    });
    assert_eq!(dead["groups"][0]["key"], "lovage.shell");
    let r = admin.post(&format!("/api/v1/tasks/{bad}/retry"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["retry_of"], bad.as_str());
    let again = r.json()["task_id"].as_str().unwrap().to_owned();
    assert_eq!(result(&admin, &again)["state"], "FAILURE");

    // Discarding the first failure's letter leaves the retry's.
    eventually("both dead letters", || {
        (read.get("/api/v1/dead").json()["total"] == 2).then_some(())
    });
    let discard = format!(r#"{{"filter":{{"ids":["{bad}"]}}}}"#);
    assert_eq!(read.post("/api/v1/dead/discard", &discard).status, 403);
    let r = admin.post("/api/v1/dead/discard", &discard);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(
        (&r["matched"], &r["done"]),
        (&Value::from(1), &Value::from(1)),
        "{r}"
    );
    let dead = read.get("/api/v1/dead").json();
    assert_eq!(dead["total"], 1, "{dead}");
    assert_eq!(dead["items"][0]["id"], again.as_str(), "{dead}");
    assert_eq!(
        result(&admin, &bad)["state"],
        "FAILURE",
        "the record stays; only the letter went"
    );
    let r = admin.post("/api/v1/dead/discard", r#"{"filter":{"ids":["nope"]}}"#);
    assert_eq!(r.status, 400, "{}", r.text());

    // The per-task series, from the workers' events, labelled by task and queue.
    let metrics = eventually("both failures in /metrics", || {
        let text = read.get("/metrics").text();
        text.contains(r#"lovage_tasks_total{task="lovage.shell",queue="default",state="failed"} 2"#)
            .then_some(text)
    });
    for want in [
        r#"lovage_tasks_total{task="lovage.sleep",queue="default",state="succeeded"} 1"#,
        r#"lovage_task_runtime_seconds_count{task="lovage.sleep",queue="default"} 1"#,
        r#"lovage_task_runtime_seconds_bucket{task="lovage.sleep",queue="default",le="0.1"} 0"#,
        r#"lovage_task_runtime_seconds_bucket{task="lovage.sleep",queue="default",le="0.25"} 1"#,
        r#"lovage_task_queue_wait_seconds_count{task="lovage.sleep",queue="default"} 1"#,
        r#"lovage_task_queue_wait_seconds_count{task="lovage.shell",queue="default"} 2"#,
        r#"lovage_broker_tasks_total{state="failed"} 2"#,
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }

    // Revoking a running task shows REVOKED at once.
    let long = send(&admin, r#"{"name":"lovage.sleep","args":[60]}"#);
    eventually("a worker to reserve the long task", || {
        let q = read.get("/api/v1/queues").json();
        let q = q
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "default")
            .cloned();
        q.filter(|q| q["reserved"] == 1).map(|_| ())
    });
    let r = admin.post(
        &format!("/api/v1/tasks/{long}/revoke"),
        r#"{"terminate":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["found"], "running");
    assert_eq!(r.json()["state"], "REVOKED");
    assert_eq!(result(&admin, &long)["state"], "REVOKED");

    // A pending task (in a queue no worker consumes) revoked: REVOKED at once.
    let waiting = send(
        &admin,
        r#"{"name":"lovage.sleep","args":[1],"queue":"nobody"}"#,
    );
    let r = admin
        .post(&format!("/api/v1/tasks/{waiting}/revoke"), "")
        .json();
    assert_eq!(r["found"], "pending");
    assert_eq!(
        read.get(&format!("/api/v1/tasks/{waiting}")).json()["state"],
        "REVOKED"
    );
    let parked = send(
        &admin,
        r#"{"name":"lovage.sleep","args":[1],"queue":"parked"}"#,
    );

    // Killed -9 and started again: the same tasks, states and counts.
    let ids = [&ok, &bad, &again, &long, &waiting, &parked];
    let states = |c: &Client| -> Vec<Value> {
        ids.iter()
            .map(|id| c.get(&format!("/api/v1/tasks/{id}")).json()["state"].clone())
            .collect()
    };
    // Everything but the ages, which grow.
    let queues = |c: &Client| {
        let mut q = c.get("/api/v1/queues").json();
        for q in q.as_array_mut().unwrap() {
            q.as_object_mut().unwrap().remove("oldest_ready_age_s");
        }
        (q, c.get("/api/v1/overview").json()["counts"].clone())
    };
    let before = (
        states(&read),
        queues(&read),
        read.get("/api/v1/dead").json()["total"].clone(),
    );
    unsafe { libc::kill(server.id() as i32, libc::SIGKILL) };
    server.wait().unwrap();
    let (_server, addr) = env.server(&tokens);
    let read = Client::new(addr).bearer(READ);
    let after = (
        states(&read),
        queues(&read),
        read.get("/api/v1/dead").json()["total"].clone(),
    );
    assert_eq!(before, after);
    assert_eq!(
        after.0,
        ["SUCCESS", "FAILURE", "FAILURE", "REVOKED", "REVOKED", "PENDING"]
    );
    let parked_q = (after.1)
        .0
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "parked")
        .cloned();
    assert_eq!(parked_q.unwrap()["ready"], 1);
}

#[test]
fn the_api_with_real_workers_on_sqlite() {
    api_with_real_workers(Env::sqlite());
}

#[test]
fn the_api_with_real_workers_on_redis() {
    api_with_real_workers(Env::redis());
}

/// Inspect, control and task types over the API with two real workers: a worker answers
/// through its mailbox, a read token cannot issue a control command, a task name no live worker
/// knows is refused, a rate limit set for a task type reaches every worker that runs it, a
/// worker killed -9 is listed as missing, and the server's task-sent and control-issued events
/// are in the stream.
fn inspect_and_control_over_the_api(env: Env) {
    let tokens = env.token_file();
    let (_server, addr) = env.server(&tokens);
    let _w1 = env.worker();
    let mut w2 = env.worker();
    let anon = Client::new(addr);
    let admin = anon.bearer(ADMIN);
    let read = anon.bearer(READ);
    let types = eventually("both workers report their task types", || {
        let t = read.get("/api/v1/task-types").json();
        let sleep = t
            .as_array()?
            .iter()
            .find(|t| t["name"] == "lovage.sleep")?
            .clone();
        (sleep["workers"].as_array()?.len() == 2).then_some(sleep)
    });
    let ids: Vec<String> = types["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();

    let r = admin.post("/api/v1/tasks", r#"{"name":"no.such.task","args":[]}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no.such.task"), "{}", r.text());
    let sent = send(&admin, r#"{"name":"lovage.sleep","args":[0]}"#);

    let r = read.get(&format!("/api/v1/workers/{}/inspect/ping", ids[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["replies"][&ids[0]]["ok"], "pong", "{}", r.text());
    let r = read.get(&format!("/api/v1/workers/{}/inspect/registered", ids[1]));
    assert!(r.text().contains("lovage.shell"), "{}", r.text());
    assert_eq!(
        read.get(&format!("/api/v1/workers/{}/inspect/bogus", ids[0]))
            .status,
        400
    );
    assert_eq!(
        read.get("/api/v1/workers/ghost@x.1/inspect/ping").status,
        404
    );
    let r = read.get(&format!(
        "/api/v1/workers/{}/inspect/ping?timeout=99",
        ids[0]
    ));
    assert_eq!(r.status, 400, "{}", r.text());

    let control = format!("/api/v1/workers/{}/control", ids[0]);
    assert_eq!(
        read.post(&control, r#"{"command":"pool_grow"}"#).status,
        403
    );
    let r = admin.post(&control, r#"{"command":"pool_shrink","args":{"n":1000}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = r.json()["replies"][&ids[0]]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reply.starts_with("cannot shrink"), "{}", r.text());
    let r = admin.post(&control, r#"{"command":"pool_grow","args":{"n":1}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["replies"][&ids[0]]["ok"].is_string(),
        "{}",
        r.text()
    );
    assert_eq!(admin.post(&control, r#"{"command":"explode"}"#).status, 400);

    let r = admin.post(
        "/api/v1/task-types/lovage.sleep/rate-limit",
        r#"{"rate":"fast"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.post(
        "/api/v1/task-types/lovage.sleep/rate-limit",
        r#"{"rate":"500/s"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let replies = r.json()["replies"].clone();
    assert!(
        ids.iter().all(|id| replies[id]["ok"].is_string()),
        "{replies}"
    );
    eventually("the limit in both workers' records", || {
        let t = read.get("/api/v1/task-types").json();
        let sleep = t
            .as_array()?
            .iter()
            .find(|t| t["name"] == "lovage.sleep")?
            .clone();
        ids.iter()
            .all(|id| sleep["limits"][id]["rate_limit"] == "500/s")
            .then_some(())
    });

    w2.kill().unwrap();
    w2.wait().unwrap();
    let r = read.get(&format!(
        "/api/v1/workers/{}/inspect/ping?timeout=0.5",
        ids[1]
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["missing"],
        serde_json::json!([ids[1]]),
        "{}",
        r.text()
    );

    let out = env
        .cmd(&[
            "events",
            "--json",
            "-n",
            "100000",
            "--types",
            "task-sent,control-issued",
        ])
        .output()
        .unwrap();
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "task-sent" && e["task_id"] == sent.as_str()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "control-issued" && e["name"] == "rate_limit"),
        "{events:?}"
    );
}

#[test]
fn inspect_and_control_over_the_api_on_sqlite() {
    inspect_and_control_over_the_api(Env::sqlite());
}

#[test]
fn inspect_and_control_over_the_api_on_redis() {
    inspect_and_control_over_the_api(Env::redis());
}

/// Bulk delete with a real worker: a finished and a waiting task go (record, index entry,
/// queue place), a running one stays and is not counted as done; a read token may not delete.
fn bulk_delete_over_the_api(env: Env) {
    let tokens = env.token_file();
    let (_server, addr) = env.server(&tokens);
    let _w = env.worker();
    let anon = Client::new(addr);
    let admin = anon.bearer(ADMIN);
    let read = anon.bearer(READ);
    let finished = send(&admin, r#"{"name":"lovage.sleep","args":[0]}"#);
    assert_eq!(result(&admin, &finished)["state"], "SUCCESS");
    let running = send(&admin, r#"{"name":"lovage.sleep","args":[60]}"#);
    let depth = |c: &Client, queue: &str, what: &str| {
        let q = c.get("/api/v1/queues").json();
        q.as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue)
            .map_or(0, |q| q[what].as_u64().unwrap())
    };
    eventually("the worker to reserve the long task", || {
        (depth(&read, "default", "reserved") == 1).then_some(())
    });
    let waiting = send(
        &admin,
        r#"{"name":"lovage.sleep","args":[1],"queue":"nobody"}"#,
    );
    assert_eq!(depth(&read, "nobody", "ready"), 1);
    let body = format!(
        r#"{{"action":"delete","filter":{{"ids":["{finished}","{running}","{waiting}"]}}}}"#
    );
    assert_eq!(read.post("/api/v1/tasks/bulk", &body).status, 403);
    let r = admin.post("/api/v1/tasks/bulk", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(
        (&r["matched"], &r["done"]),
        (&Value::from(3), &Value::from(2)),
        "{r}"
    );
    let mut done: Vec<&str> = r["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    done.sort_unstable();
    let mut want = vec![finished.as_str(), waiting.as_str()];
    want.sort_unstable();
    assert_eq!(done, want, "{r}");
    // Nothing is known about them any more (an unknown id reads as PENDING, as in Celery).
    for id in [&finished, &waiting] {
        let t = read.get(&format!("/api/v1/tasks/{id}")).json();
        assert_eq!(t["state"], "PENDING", "{t}");
        assert!(t["queue"].is_null() && t["result"].is_null(), "{t}");
    }
    assert_eq!(depth(&read, "nobody", "ready"), 0, "left its queue");
    let t = read.get(&format!("/api/v1/tasks/{running}")).json();
    assert!(
        t["state"] == "RECEIVED" || t["state"] == "STARTED",
        "the running task stays: {t}"
    );
    assert_eq!(depth(&read, "default", "reserved"), 1);
    let r = admin.post("/api/v1/tasks/bulk", r#"{"action":"delete","filter":{}}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.post(
        "/api/v1/tasks/bulk",
        r#"{"action":"shred","filter":{"ids":[]}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn bulk_delete_over_the_api_on_sqlite() {
    bulk_delete_over_the_api(Env::sqlite());
}

#[test]
fn bulk_delete_over_the_api_on_redis() {
    bulk_delete_over_the_api(Env::redis());
}

/// A real `lovage beat` publishes its schedule in the broker; `GET /schedule` shows its
/// entries, their next runs to come and the beat that leads.
fn schedule_from_a_real_beat(env: Env) {
    let tokens = env.token_file();
    let (_server, addr) = env.server(&tokens);
    let anon = Client::new(addr);
    let read = anon.bearer(READ);
    assert_eq!(anon.get("/api/v1/schedule").status, 401);
    let none = read.get("/api/v1/schedule");
    assert_eq!(none.status, 200, "{}", none.text());
    assert_eq!(none.json(), serde_json::json!([]));
    let file = env.dir.path().join("beat.toml");
    std::fs::write(
        &file,
        "[[entry]]\nname = \"hourly\"\ntask = \"lovage.noop\"\nevery = \"1h\"\n\n\
         [[entry]]\nname = \"nightly\"\ntask = \"lovage.shell\"\nargs = [[\"true\"]]\n\
         cron = \"30 2 * * *\"\nqueue = \"reports\"\n",
    )
    .unwrap();
    let _beat = Killed(
        env.cmd(&["beat", "--lock-ttl", "2s", "--schedule"])
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let all = eventually("the beat's schedule", || {
        let s = read.get("/api/v1/schedule").json();
        (s.as_array()?.len() == 1).then_some(s)
    });
    let s = &all[0];
    assert!(s["leader"].as_str().unwrap().starts_with("beat@"), "{s}");
    assert_eq!(s["stale"], false, "{s}");
    let entries = s["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly", "nightly"], "{s}");
    assert_eq!(entries[0]["schedule"], "every 1h", "{s}");
    assert_eq!(entries[0]["queue"], "default", "{s}");
    assert_eq!(entries[1]["queue"], "reports", "{s}");
    assert!(
        entries[1]["schedule"]
            .as_str()
            .unwrap()
            .contains("30 2 * * *"),
        "{s}"
    );
    for e in entries {
        assert!(e["next_run"].is_string(), "{e}");
        assert!(
            e["next_run_in_s"].as_f64().unwrap() > 0.0,
            "in the future: {e}"
        );
    }
    let doc = read.get("/api/v1/openapi.json").json();
    assert!(
        doc["paths"]["/api/v1/schedule"]["get"].is_object(),
        "in the OpenAPI document"
    );
}

#[test]
fn schedule_from_a_real_beat_on_sqlite() {
    schedule_from_a_real_beat(Env::sqlite());
}

#[test]
fn schedule_from_a_real_beat_on_redis() {
    schedule_from_a_real_beat(Env::redis());
}

/// SSO behind a reverse proxy: the user a trusted peer names in `--trust-user-header` is
/// signed in (read, or admin for `--proxy-admins`), a read-only user's mutation is a 403, the
/// admin's control command is audited under their name, tokens still work without the header,
/// and the header from an untrusted peer is ignored.
fn a_proxy_signs_users_in(env: Env) {
    let tokens = env.token_file();
    let (_server, addr) = env.server_with(&[
        "--bind",
        "127.0.0.1:0",
        "--token-file",
        tokens.to_str().unwrap(),
        "--trust-user-header",
        "X-Forwarded-User",
        "--proxy-admins",
        "alice,carol",
    ]);
    let _w = env.worker();
    let anon = Client::new(addr);
    let bob = anon.with("x-forwarded-user", "bob");
    let alice = anon
        .with("x-forwarded-user", "alice")
        .with("x-lovage-csrf", "1");
    let me = bob.get("/api/v1/me");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(
        (&me.json()["name"], &me.json()["scope"]),
        (&Value::from("bob"), &Value::from("read"))
    );
    assert_eq!(bob.get("/session").json()["name"], "bob");
    let task = r#"{"name":"lovage.sleep","args":[0]}"#;
    assert_eq!(bob.post("/api/v1/tasks", task).status, 403);
    let no_csrf = anon.with("x-forwarded-user", "alice");
    assert_eq!(no_csrf.post("/api/v1/tasks", task).status, 403);
    let r = alice.post("/api/v1/tasks", task);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(alice.get("/api/v1/me").json()["scope"], "admin");
    assert_eq!(
        anon.get("/api/v1/overview").status,
        401,
        "no header, no token"
    );
    assert_eq!(anon.bearer(READ).get("/api/v1/overview").status, 200);

    let worker = eventually("the worker online", || {
        let ws = bob.get("/api/v1/workers").json();
        ws.as_array()?.first()?["id"].as_str().map(str::to_owned)
    });
    let control = format!("/api/v1/workers/{worker}/control");
    let body = r#"{"command":"pool_grow","args":{"n":1}}"#;
    assert_eq!(bob.post(&control, body).status, 403);
    let r = alice.post(&control, body);
    assert_eq!(r.status, 200, "{}", r.text());
    let out = env
        .cmd(&[
            "events",
            "--json",
            "-n",
            "100000",
            "--types",
            "control-issued",
        ])
        .output()
        .unwrap();
    let audit: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        audit
            .iter()
            .any(|e| e["name"] == "pool_grow" && e["error"] == "alice"),
        "the audit names who: {audit:?}"
    );

    // A non-loopback bind without tokens starts behind a proxy; a peer that is not the
    // proxy cannot sign in by setting the header itself.
    let (_s2, far) = env.server_with(&[
        "--bind",
        "0.0.0.0:0",
        "--trust-user-header",
        "X-Forwarded-User",
        "--trusted-proxy",
        "10.9.9.9",
    ]);
    let spoof = Client::new(far).with("x-forwarded-user", "alice");
    assert_eq!(spoof.get("/api/v1/overview").status, 401);
}

#[test]
fn a_proxy_signs_users_in_on_sqlite() {
    a_proxy_signs_users_in(Env::sqlite());
}

#[test]
fn a_proxy_signs_users_in_on_redis() {
    a_proxy_signs_users_in(Env::redis());
}

#[test]
fn a_non_loopback_bind_without_tokens_refuses_to_start() {
    let env = Env::sqlite();
    let out = env
        .cmd(&["server", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
}
