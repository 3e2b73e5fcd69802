//! `GET /metrics`: Prometheus text format (version 0.0.4), written by hand: gauges read from
//! the broker at scrape time, counters from the broker's own counters, histograms and event
//! counts from the hub's bounded memory.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use lovage_broker::BrokerError;

use crate::api::{blocking, queue_views, worker_views};
use crate::auth::authorize;
use crate::error::ApiError;
use crate::hub::BUCKETS;
use crate::ServerState;

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Resident memory of this process, from /proc (Linux); None elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The metrics; needs a read token unless the server was started with `--open-metrics`.
pub async fn metrics(
    State(state): State<ServerState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.open_metrics {
        authorize(&state.auth, &method, &headers)?;
    }
    state.hub.ensure_started(&state.app);
    let (queues, workers, counts) = blocking(&state, |app| {
        let counts = match app.backend().inspect().task_counts() {
            Ok(c) => Some(c),
            Err(BrokerError::Unsupported { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((queue_views(app)?, worker_views(app)?, counts))
    })
    .await?;
    let mut out = String::with_capacity(4096);
    if let Some(c) = counts {
        head(
            &mut out,
            "lovage_tasks_total",
            "counter",
            "Tasks by state change, from the broker's counters.",
        );
        for (state, n) in [
            ("sent", c.sent),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("retried", c.retried),
            ("revoked", c.revoked),
        ] {
            let _ = writeln!(out, "lovage_tasks_total{{state=\"{state}\"}} {n}");
        }
        head(
            &mut out,
            "lovage_tasks",
            "gauge",
            "Tasks waiting or held now, from the broker's counters.",
        );
        for (state, n) in [
            ("pending", c.pending),
            ("scheduled", c.scheduled),
            ("reserved", c.reserved),
        ] {
            let _ = writeln!(out, "lovage_tasks{{state=\"{state}\"}} {n}");
        }
    }
    head(
        &mut out,
        "lovage_queue_depth",
        "gauge",
        "Tasks per queue and state.",
    );
    for q in &queues {
        let name = esc(&q.name);
        for (st, n) in [
            ("ready", q.ready),
            ("scheduled", q.scheduled),
            ("reserved", q.reserved),
            ("dead", q.dead),
        ] {
            let _ = writeln!(
                out,
                "lovage_queue_depth{{queue=\"{name}\",state=\"{st}\"}} {n}"
            );
        }
    }
    head(
        &mut out,
        "lovage_queue_paused",
        "gauge",
        "1 while delivery from the queue is paused.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "lovage_queue_paused{{queue=\"{}\"}} {}",
            esc(&q.name),
            u8::from(q.paused)
        );
    }
    head(
        &mut out,
        "lovage_queue_oldest_ready_age_seconds",
        "gauge",
        "How long the oldest ready task of the queue has waited.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "lovage_queue_oldest_ready_age_seconds{{queue=\"{}\"}} {}",
            esc(&q.name),
            q.oldest_ready_age_s.unwrap_or(0.0)
        );
    }
    head(
        &mut out,
        "lovage_workers",
        "gauge",
        "Workers known to the broker, by state.",
    );
    let online = workers.iter().filter(|w| w.online).count();
    let _ = writeln!(out, "lovage_workers{{state=\"online\"}} {online}");
    let _ = writeln!(
        out,
        "lovage_workers{{state=\"offline\"}} {}",
        workers.len() - online
    );
    if state.metrics_per_worker {
        // Only workers the broker still knows: a worker that went away drops out here.
        head(
            &mut out,
            "lovage_worker_active_tasks",
            "gauge",
            "Tasks running on the worker.",
        );
        for w in workers.iter().filter(|w| w.online) {
            let _ = writeln!(
                out,
                "lovage_worker_active_tasks{{worker=\"{}\"}} {}",
                esc(&w.id),
                w.active
            );
        }
        head(
            &mut out,
            "lovage_worker_tasks_done",
            "counter",
            "Tasks the worker finished.",
        );
        for w in workers.iter().filter(|w| w.online) {
            let _ = writeln!(
                out,
                "lovage_worker_tasks_done{{worker=\"{}\"}} {}",
                esc(&w.id),
                w.tasks_done
            );
        }
    }
    head(
        &mut out,
        "lovage_task_runtime_seconds",
        "histogram",
        "Run time of finished tasks seen in the event stream since the server started.",
    );
    for ((task, queue), h) in state.hub.runtimes() {
        let labels = format!("task=\"{}\",queue=\"{}\"", esc(&task), esc(&queue));
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            let _ = writeln!(
                out,
                "lovage_task_runtime_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "lovage_task_runtime_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "lovage_task_runtime_seconds_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(
            out,
            "lovage_task_runtime_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    head(
        &mut out,
        "lovage_events_total",
        "counter",
        "Events read from the broker's stream since the server started.",
    );
    for (kind, n) in state.hub.events_total() {
        let _ = writeln!(out, "lovage_events_total{{type=\"{}\"}} {n}", kind.as_str());
    }
    head(
        &mut out,
        "lovage_server_sse_clients",
        "gauge",
        "Event-stream clients connected now.",
    );
    let _ = writeln!(
        out,
        "lovage_server_sse_clients {}",
        state.hub.sse_clients.load(Ordering::Acquire)
    );
    head(
        &mut out,
        "lovage_server_events_lagged_total",
        "counter",
        "Times a client fell behind by more than its buffer.",
    );
    let _ = writeln!(
        out,
        "lovage_server_events_lagged_total {}",
        state.hub.lagged_total.load(Ordering::Acquire)
    );
    if let Some(rss) = rss_bytes() {
        head(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    head(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {}", state.started_unix_s);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
