//! The API served in this process over a real SQLite broker: auth, input checking, the error
//! shape, the OpenAPI document, and the task endpoints that need no worker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

#[path = "common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Client;
use lovage_broker::App;
use lovage_server::{auth::hash_token, Auth, Config, Server, ServerState, Tokens};
use serde_json::Value;

const READ: &str = "read-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

/// A server on an ephemeral port over a fresh SQLite file, with a read and an admin token.
struct Running {
    client: Client,
    app: App,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let app = App::connect(&format!("sqlite://{}", dir.path().join("q.db").display())).unwrap();
    let tokens = Tokens::parse(
        &format!(
            "read sha256:{} viewer\nadmin sha256:{} ops\n",
            hash_token(READ),
            hash_token(ADMIN)
        ),
        "test",
    )
    .unwrap();
    let state = ServerState::new(app.clone(), Auth::Tokens(Arc::new(tokens)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    rt.spawn(async move {
        axum::serve(listener, lovage_server::router(state))
            .await
            .unwrap()
    });
    Running {
        client: Client::new(addr),
        app,
        _dir: dir,
        _rt: rt,
    }
}

fn error_code(r: &http::Response) -> String {
    let v = r.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {v}"
    );
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[test]
fn no_token_is_401_and_a_read_token_on_a_mutation_is_403() {
    let s = start();
    let anon = &s.client;
    let r = anon.get("/api/v1/overview");
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthorized");
    assert_eq!(anon.bearer("wrong").get("/api/v1/overview").status, 401);
    let read = anon.bearer(READ);
    assert_eq!(read.get("/api/v1/overview").status, 200);
    let r = read.post("/api/v1/tasks", r#"{"name":"lovage.sleep","args":[1]}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(error_code(&r), "forbidden");
    let r = anon
        .bearer(ADMIN)
        .post("/api/v1/tasks", r#"{"name":"lovage.sleep","args":[1]}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    // Health needs no token.
    assert_eq!(anon.get("/healthz").status, 200);
    assert_eq!(anon.get("/readyz").status, 200);
}

#[test]
fn login_sets_an_http_only_cookie_and_cookie_mutations_are_csrf_checked() {
    let s = start();
    let r = s
        .client
        .post("/login", &format!(r#"{{"token":"{ADMIN}"}}"#));
    assert_eq!(r.status, 204, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let browser = s.client.with("cookie", &pair);
    assert_eq!(browser.get("/api/v1/queues").status, 200);
    let body = r#"{"name":"lovage.sleep","args":[1]}"#;
    assert_eq!(browser.post("/api/v1/tasks", body).status, 403);
    let same_site = browser.with("x-lovage-csrf", "1");
    assert_eq!(same_site.post("/api/v1/tasks", body).status, 202);
    let cross = same_site.with("origin", "https://evil.example");
    assert_eq!(cross.post("/api/v1/tasks", body).status, 403);
    let r = s.client.post("/login", r#"{"token":"nope"}"#);
    assert_eq!(r.status, 401);
}

#[test]
fn bad_input_is_a_4xx_with_a_message_never_a_5xx() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    let cases: Vec<(&str, &str, Option<&str>, u16)> = vec![
        ("POST", "/api/v1/tasks", Some(r#"{"name":"#), 400),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","bogus":1}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","args":{"a":1}}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","args":[],"kwargs":{}}"#),
            400,
        ),
        ("POST", "/api/v1/tasks", Some(r#"{"name":""}"#), 400),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","priority":12}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","countdown":-1}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks",
            Some(r#"{"name":"x","eta":"tomorrow"}"#),
            400,
        ),
        ("POST", "/api/v1/tasks", Some("[1,2]"), 400),
        ("GET", "/api/v1/tasks/not-an-id", None, 400),
        ("GET", "/api/v1/tasks/not-an-id/result", None, 400),
        ("GET", "/api/v1/dead?group_by=colour", None, 400),
        ("GET", "/api/v1/dead?limit=-3", None, 400),
        ("GET", "/api/v1/dead?cursor=zzz", None, 400),
        (
            "POST",
            "/api/v1/dead/retry",
            Some(r#"{"filter":{"ids":["x"]}}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks/01a23a05-f176-7000-8365-3124468734f6/revoke",
            Some(r#"{"terminate":"yes"}"#),
            400,
        ),
        ("GET", "/api/v1/no-such-thing", None, 404),
        ("GET", "/api/v1/workers/nobody", None, 404),
    ];
    for (method, path, body, want) in cases {
        let r = c.request(method, path, body.map(str::as_bytes));
        assert_eq!(r.status, want, "{method} {path} {body:?}: {}", r.text());
        error_code(&r);
    }
    let id = lovage_core::TaskId::new();
    let r = c.get(&format!("/api/v1/tasks/{id}/result?wait=soon"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("wait"), "{}", r.text());
    // Larger than the body limit: 413, in the same error shape.
    let big = format!(
        r#"{{"name":"x","args":["{}"]}}"#,
        "a".repeat(lovage_server::BODY_LIMIT)
    );
    let r = c.post("/api/v1/tasks", &big);
    assert_eq!(r.status, 413);
    assert_eq!(error_code(&r), "too_large");
    // Not JSON at all.
    let r = c
        .with("content-type", "text/plain")
        .request("POST", "/api/v1/login", None);
    assert!((400..500).contains(&r.status), "{}", r.status);
}

#[test]
fn a_sent_task_is_pending_and_revoking_it_makes_it_revoked_at_once() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    let r = c.post(
        "/api/v1/tasks",
        r#"{"name":"lovage.sleep","args":[5],"queue":"api-test","priority":3}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["task_id"].as_str().unwrap().to_owned();
    let t = c.get(&format!("/api/v1/tasks/{id}")).json();
    assert_eq!(t["state"], "PENDING");
    assert_eq!(t["finished"], false);
    let q = c.get("/api/v1/queues").json();
    let q = q
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "api-test")
        .unwrap()
        .clone();
    assert_eq!(q["ready"], 1, "{q}");
    let r = c.post(&format!("/api/v1/tasks/{id}/revoke"), "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["found"], "pending");
    assert_eq!(r.json()["state"], "REVOKED");
    let t = c.get(&format!("/api/v1/tasks/{id}")).json();
    assert_eq!(t["state"], "REVOKED", "{t}");
    assert_eq!(t["error"]["kind"], "Revoked", "{t}");
    // The broker agrees: nothing waits in the queue any more.
    let stats = s.app.queues().unwrap();
    assert!(
        stats.iter().all(|q| q.queue != "api-test" || q.ready == 0),
        "{stats:?}"
    );
    // A result wait on a finished task answers at once.
    let r = c.get(&format!("/api/v1/tasks/{id}/result?wait=10s")).json();
    assert_eq!(r["state"], "REVOKED");
}

#[test]
fn a_dead_letter_is_retried_as_a_new_task_with_the_same_arguments() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    // Fail a task for good by hand, as a worker would: reserve it, then discard it.
    let sig = lovage_core::Signature::new(
        "lovage.shell",
        &serde_json::json!([["false"]]),
        lovage_core::Codec::Json,
    )
    .unwrap();
    let id = s.app.send_signature(sig).unwrap();
    let broker = s.app.backend().broker();
    let d = broker
        .reserve(
            &["default".to_owned()],
            1,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .pop()
        .unwrap();
    broker
        .discard(
            &d.lease,
            &d.envelope,
            &lovage_core::TaskError::new("Exit", "exit 1"),
        )
        .unwrap();
    let dead = c.get("/api/v1/dead").json();
    assert_eq!(dead["total"], 1, "{dead}");
    assert_eq!(dead["items"][0]["id"], id.to_string());
    assert_eq!(dead["items"][0]["args_preview"], r#"[["false"]]"#);
    let g = c.get("/api/v1/dead?group_by=error").json();
    assert_eq!(g["groups"][0]["key"], "Exit", "{g}");
    assert_eq!(g["groups"][0]["count"], 1);
    let r = c.post(&format!("/api/v1/tasks/{id}/retry"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    let new = r.json();
    assert_eq!(new["retry_of"], id.to_string());
    let new_id: lovage_core::TaskId = new["task_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(new_id, id);
    let again = broker
        .reserve(
            &["default".to_owned()],
            1,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(again.envelope.id, new_id);
    assert_eq!(again.envelope.task, "lovage.shell");
    assert_eq!(again.envelope.args, d.envelope.args);
    // A task with no dead letter cannot be retried: its arguments are not known.
    let r = c.post(
        &format!("/api/v1/tasks/{}/retry", lovage_core::TaskId::new()),
        "",
    );
    assert_eq!(r.status, 409);
    // Bulk retry by error kind.
    let r = c
        .post("/api/v1/dead/retry", r#"{"filter":{"error":"Exit"}}"#)
        .json();
    assert_eq!(r["matched"], 1, "{r}");
    assert_eq!(r["done"], 1);
}

#[test]
fn the_openapi_document_lists_every_route() {
    let s = start();
    let doc: Value = s.client.get("/api/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/overview",
        "/api/v1/tasks",
        "/api/v1/tasks/bulk",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/result",
        "/api/v1/tasks/{id}/revoke",
        "/api/v1/tasks/{id}/retry",
        "/api/v1/queues",
        "/api/v1/queues/{queue}/purge",
        "/api/v1/queues/{queue}/pause",
        "/api/v1/queues/{queue}/resume",
        "/api/v1/queues/{queue}/peek",
        "/api/v1/dead",
        "/api/v1/dead/retry",
        "/api/v1/workers",
        "/api/v1/workers/{id}",
        "/api/v1/events",
        "/api/v1/charts",
        "/healthz",
        "/readyz",
        "/login",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Overview",
        "TaskDetail",
        "QueueView",
        "WorkerView",
        "ErrorBody",
        "SubmitTask",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
}

#[test]
fn a_non_loopback_bind_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |bind: &str, insecure| Config {
        broker: format!("sqlite://{}", dir.path().join("q.db").display()),
        bind: bind.parse().unwrap(),
        token_file: None,
        insecure_no_auth: insecure,
        open_metrics: false,
        metrics_per_worker: false,
        trust_user_header: None,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        proxy_admins: Vec::new(),
    };
    let behind_proxy = Config {
        trust_user_header: Some("X-Forwarded-User".into()),
        ..config("0.0.0.0:0", false)
    };
    assert!(
        Server::bind(&behind_proxy).is_ok(),
        "a proxy signs users in"
    );
    let bad_header = Config {
        trust_user_header: Some("not a header".into()),
        ..config("127.0.0.1:0", false)
    };
    let e = Server::bind(&bad_header).unwrap_err();
    assert!(e.contains("--trust-user-header"), "{e}");
    let e = Server::bind(&config("0.0.0.0:0", false)).unwrap_err();
    assert!(
        e.contains("--token-file") && e.contains("--insecure-no-auth"),
        "{e}"
    );
    assert!(Server::bind(&config("0.0.0.0:0", true)).is_ok());
    assert!(Server::bind(&config("127.0.0.1:0", false)).is_ok());
}

#[test]
fn tasks_are_listed_in_keyset_pages_and_a_bad_cursor_is_a_400() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    let mut sent = Vec::new();
    for i in 0..7 {
        let body = format!(r#"{{"name":"lovage.sleep","args":[{i}],"queue":"list-test"}}"#);
        let r = c.post("/api/v1/tasks", &body);
        assert_eq!(r.status, 202, "{}", r.text());
        sent.push(r.json()["task_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(cur) => format!("/api/v1/tasks?queue=list-test&limit=3&cursor={cur}"),
            None => "/api/v1/tasks?queue=list-test&limit=3".to_owned(),
        };
        let page = c.get(&path);
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        for it in items {
            assert_eq!(it["state"], "PENDING", "{it}");
            assert_eq!(it["name"], "lovage.sleep");
            assert_eq!(it["queue"], "list-test");
            seen.push(it["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    sent.reverse(); // newest first
    assert_eq!(seen, sent);
    // Filters and search.
    let r = c.get("/api/v1/tasks?state=success").json();
    assert_eq!(r["items"].as_array().unwrap().len(), 0, "{r}");
    let r = c.get("/api/v1/tasks?q=%5B6%5D").json();
    assert_eq!(r["items"].as_array().unwrap().len(), 1, "{r}");
    for bad in [
        "/api/v1/tasks?cursor=zzz",
        "/api/v1/tasks?cursor=t123",
        "/api/v1/tasks?state=DONE",
        "/api/v1/tasks?since=yesterday",
        "/api/v1/tasks?limit=x",
        "/api/v1/tasks?colour=red",
    ] {
        let r = c.get(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        error_code(&r);
    }
    // The detail shows the arguments the broker holds.
    let t = c.get(&format!("/api/v1/tasks/{}", sent[0])).json();
    assert_eq!(t["args"], serde_json::json!([6]), "{t}");
    assert_eq!(t["queue"], "list-test");
    // Counts come from the broker's counters.
    let o = c.get("/api/v1/overview").json();
    assert_eq!(o["counts"]["sent"], 7, "{o}");
    assert_eq!(o["counts"]["pending"], 7, "{o}");
}

#[test]
fn a_queue_is_paused_peeked_and_resumed() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    for i in 0..3 {
        let body = format!(r#"{{"name":"lovage.sleep","args":[{i}],"queue":"pq","priority":{i}}}"#);
        assert_eq!(c.post("/api/v1/tasks", &body).status, 202);
    }
    let r = c.post("/api/v1/queues/pq/pause", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let q = c.get("/api/v1/queues").json();
    let pq = q
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "pq")
        .unwrap()
        .clone();
    assert_eq!(pq["paused"], true, "{pq}");
    assert_eq!(pq["ready"], 3);
    // Paused: a reserve on it gets nothing.
    let got = s
        .app
        .backend()
        .broker()
        .reserve(
            &["pq".to_owned()],
            1,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(50),
        )
        .unwrap();
    assert!(got.is_empty());
    let peek = c.get("/api/v1/queues/pq/peek?limit=2").json();
    let peek = peek.as_array().unwrap();
    assert_eq!(peek.len(), 2);
    assert_eq!(peek[0]["priority"], 2, "highest priority first: {peek:?}");
    assert_eq!(c.post("/api/v1/queues/pq/resume", "").status, 200);
    let got = s
        .app
        .backend()
        .broker()
        .reserve(
            &["pq".to_owned()],
            1,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(got.len(), 1);
    let read = s.client.bearer(READ);
    assert_eq!(read.post("/api/v1/queues/pq/pause", "").status, 403);
}

fn publish(app: &App, n: usize, queue: &str) {
    use lovage_broker::ops::{Event, EventKind};
    let events: Vec<Event> = (0..n)
        .map(|_| {
            let mut e = Event::new(EventKind::TaskSucceeded);
            e.task_id = Some(lovage_core::TaskId::new());
            e.name = Some("lovage.sleep".into());
            e.queue = Some(queue.into());
            e.runtime_ms = Some(20);
            e
        })
        .collect();
    app.backend().events().publish(&events).unwrap();
}

#[test]
fn the_event_stream_resumes_from_last_event_id_and_then_follows_live() {
    let s = start();
    let c = s.client.bearer(READ);
    assert_eq!(s.client.events("/api/v1/events").status, 401);
    // Start the poller, and put three events in the broker's stream.
    assert_eq!(c.get("/api/v1/overview").status, 200);
    publish(&s.app, 3, "ev");
    let first = s.app.backend().events().read_events(0, 10).unwrap();
    let seqs: Vec<u64> = first.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3);
    // Resume after the first: the other two come from the broker, in order.
    let mut stream = c
        .with("last-event-id", &seqs[0].to_string())
        .events("/api/v1/events");
    assert_eq!(stream.status, 200);
    for want in &seqs[1..] {
        let e = stream.next();
        assert_eq!(e.event, "task-succeeded", "{e:?}");
        assert_eq!(e.id.as_deref(), Some(want.to_string().as_str()));
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["seq"], *want);
        assert_eq!(data["queue"], "ev");
    }
    // Then live ones, with nothing missed or repeated.
    publish(&s.app, 2, "ev");
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(stream.next().id.unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(live, vec![seqs[2] + 1, seqs[2] + 2]);
    // A filter by queue: only its events.
    let mut other = c.events("/api/v1/events?queue=other");
    publish(&s.app, 1, "ev");
    publish(&s.app, 1, "other");
    let e = other.next();
    let data: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data["queue"], "other", "{e:?}");
    let r = c.get("/api/v1/events?types=task-exploded");
    assert_eq!(r.status, 400);
    let r = c.with("last-event-id", "yesterday").get("/api/v1/events");
    assert_eq!(r.status, 400);
}

#[test]
fn metrics_are_prometheus_text_and_need_a_token() {
    let s = start();
    assert_eq!(s.client.get("/metrics").status, 401);
    let c = s.client.bearer(ADMIN);
    assert_eq!(
        c.post(
            "/api/v1/tasks",
            r#"{"name":"lovage.sleep","args":[1],"queue":"m\"q"}"#
        )
        .status,
        202
    );
    let r = s.client.bearer(READ).get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for want in [
        "# TYPE lovage_queue_depth gauge",
        r#"lovage_queue_depth{queue="m\"q",state="ready"} 1"#,
        r#"lovage_broker_tasks_total{state="sent"} 1"#,
        r#"lovage_workers{state="online"} 0"#,
        "lovage_server_sse_clients 0",
        "# TYPE lovage_task_runtime_seconds histogram",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    // Every sample line is `name{labels} value` with a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[test]
fn the_dashboard_is_served_from_the_binary_with_a_same_origin_policy() {
    let s = start();
    let r = s.client.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains(r#"<script src="ui/app.js">"#));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let js = s.client.get("/ui/app.js");
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    // Every API path the page uses is relative, so the page works under any prefix.
    assert!(
        !js.text().contains("\"/api/"),
        "absolute API path in app.js"
    );
    assert_eq!(s.client.get("/ui/app.css").status, 200);
    let me = s.client.bearer(READ).get("/api/v1/me").json();
    assert_eq!(me["scope"], "read");
    assert_eq!(me["name"], "viewer");
}

#[test]
fn bulk_revoke_by_filter_and_bad_bulk_requests() {
    let s = start();
    let c = s.client.bearer(ADMIN);
    for i in 0..4 {
        let body = format!(r#"{{"name":"lovage.sleep","args":[{i}],"queue":"bulkq"}}"#);
        assert_eq!(c.post("/api/v1/tasks", &body).status, 202);
    }
    assert_eq!(
        c.post(
            "/api/v1/tasks",
            r#"{"name":"lovage.sleep","args":[9],"queue":"keep"}"#
        )
        .status,
        202
    );
    let r = c.post(
        "/api/v1/tasks/bulk",
        r#"{"action":"revoke","filter":{"queue":"bulkq"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["matched"], 4);
    assert_eq!(r.json()["done"], 4);
    let left = c.get("/api/v1/tasks?state=PENDING").json();
    let left = left["items"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["queue"], "keep");
    for (body, want) in [
        (r#"{"action":"revoke","filter":{}}"#, 400),
        (r#"{"action":"explode","filter":{"queue":"x"}}"#, 400),
        (r#"{"action":"delete","filter":{}}"#, 400),
        (r#"{"action":"retry","filter":{"state":"LOST"}}"#, 400),
        (r#"{"action":"retry"}"#, 400),
    ] {
        let r = c.post("/api/v1/tasks/bulk", body);
        assert_eq!(r.status, want, "{body}: {}", r.text());
    }
    // Delete by filter: the waiting task leaves its queue and the index.
    let r = c.post(
        "/api/v1/tasks/bulk",
        r#"{"action":"delete","filter":{"queue":"keep"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["matched"].clone(), r.json()["done"].clone()),
        (1.into(), 1.into())
    );
    let left = c.get("/api/v1/tasks?queue=keep").json();
    assert!(left["items"].as_array().unwrap().is_empty(), "{left}");
    assert_eq!(
        s.client
            .bearer(READ)
            .post(
                "/api/v1/tasks/bulk",
                r#"{"action":"revoke","filter":{"queue":"keep"}}"#
            )
            .status,
        403
    );
}

#[test]
fn a_stalled_event_client_is_told_it_lagged_while_one_that_keeps_up_misses_nothing() {
    let s = start();
    let c = s.client.bearer(READ);
    // Starts the poller.
    assert_eq!(c.get("/api/v1/overview").status, 200);
    let base = s
        .app
        .backend()
        .events()
        .read_events(u64::MAX - 1, 1)
        .unwrap()
        .last_seq;
    let path = format!("/api/v1/events?last_event_id={base}");
    let mut stalled = c.events(&path);
    let mut keeping = c.events(&path);
    // Far more than the shared ring (8192) and the socket buffers (a few MiB) hold.
    const N: u64 = 80_000;
    let reader = std::thread::spawn(move || {
        for want in base + 1..=base + N {
            let e = keeping.next();
            assert_eq!(e.event, "task-succeeded", "{e:?}");
            assert_eq!(e.id.as_deref(), Some(want.to_string().as_str()), "{e:?}");
        }
    });
    // Paced as busy workers publish: about 100,000 events/s.
    for _ in 0..N / 500 {
        publish(&s.app, 500, "lag");
        std::thread::sleep(Duration::from_millis(5));
    }
    reader.join().unwrap();
    // The stalled client: what its buffers held, then `lagged` saying how many it skipped.
    let mut got = 0;
    let missed = loop {
        let e = stalled.next();
        if e.event == "lagged" {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            break data["missed"].as_u64().unwrap();
        }
        got += 1;
        assert!(
            got < N,
            "every event reached the stalled client: no lag shown"
        );
    };
    assert!(
        missed > 0 && got + missed <= N,
        "got {got}, missed {missed}"
    );
    let metrics = c.get("/metrics").text();
    assert!(
        metrics.contains("lovage_server_events_lagged_total 1"),
        "{metrics}"
    );
}
