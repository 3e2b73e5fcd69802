//! The seed's Flask route, in axum: `POST /scrape {"url": ...}` sends a task and answers
//! `202 {"task_id": ...}`, and lovage's own API is mounted under `/lovage` in the same app
//! (so `GET /lovage/api/v1/tasks/{id}/result?wait=10s` gives the result).
//!
//! ```python
//! @app.route("/scrape", methods=["POST"])
//! def scrape():
//!     task = fetch_page.delay(request.json["url"])
//!     return {"task_id": task.id}, 202
//! ```
//!
//! Run: `cargo run --example server_route` and then
//! `curl -XPOST localhost:8080/scrape -H 'content-type: application/json' -d '{"url":"https://example.com"}'`.
//! With `--quick` it sends one request to itself, prints the result and exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use lovage::server::{router, Auth, ServerState};
use lovage::{App, PoolKind, Worker, WorkerConfig};
use serde_json::{json, Value};

/// The task the route sends: here it measures the URL instead of fetching it, so the example
/// needs no network.
#[lovage::task]
fn fetch_page(url: String) -> usize {
    url.len()
}

#[derive(serde::Deserialize)]
struct Scrape {
    url: String,
}

/// `POST /scrape`: send the task, answer 202 with its id.
async fn scrape(State(app): State<App>, Json(body): Json<Scrape>) -> (StatusCode, Json<Value>) {
    // Sending is one broker write; run it off the async threads like any blocking call.
    let sent = tokio::task::spawn_blocking(move || fetch_page::delay(&app, body.url)).await;
    match sent {
        Ok(Ok(task)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "task_id": task.id().to_string() })),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("scrape.db").display());
    let app = App::connect(&url).expect("open the broker");

    // A worker in a thread of this program; in production, `lovage worker` processes.
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        ..Default::default()
    };
    let worker = Worker::new(app.backend().clone(), config).expect("start the worker");
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("worker"));

    // Your app: its own route, and lovage's API and dashboard under /lovage. Auth::Open is for
    // a loopback example; give real tokens (`Tokens::load`) anywhere else.
    let lovage_api = router(ServerState::new(app.clone(), Auth::Open));
    let web = Router::new()
        .route("/scrape", post(scrape))
        .with_state(app)
        .nest("/lovage", lovage_api);

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let bind = if quick {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:8080"
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(bind))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    println!("listening on http://{addr}/ (POST /scrape, GET /lovage/api/v1/overview)");
    let serving = rt.spawn(async move { axum::serve(listener, web).await });

    if quick {
        let (status, body) = http(addr, "POST", "/scrape", r#"{"url":"https://example.com"}"#);
        println!("POST /scrape -> {status} {body}");
        let reply: Value = serde_json::from_str(&body).expect("JSON");
        let id = reply["task_id"].as_str().expect("task_id");
        let path = format!("/lovage/api/v1/tasks/{id}/result?wait=10s");
        let (status, body) = http(addr, "GET", &path, "");
        println!("GET {path} -> {status} {body}");
        let result: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(result["state"], "SUCCESS", "{result}");
        assert_eq!(result["result"], 19);
    } else {
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    serving.abort();
    stop.graceful();
    running.join().expect("worker thread");
}

/// One HTTP/1.1 request, for `--quick` (any client would do).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}
