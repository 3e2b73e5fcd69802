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
use crate::auth::authorize_from;
use crate::error::ApiError;
use crate::hub::{Histogram, Series, BUCKETS, MAX_SERIES, STATE_LABELS, WAIT_BUCKETS};
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
    extensions: axum::http::Extensions,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.open_metrics {
        authorize_from(&state, &method, &headers, crate::auth::peer(&extensions))?;
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
            "lovage_broker_tasks_total",
            "counter",
            "Tasks by state change over every task and queue, from the broker's counters (they \
             survive server restarts).",
        );
        for (state, n) in [
            ("sent", c.sent),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("retried", c.retried),
            ("revoked", c.revoked),
        ] {
            let _ = writeln!(out, "lovage_broker_tasks_total{{state=\"{state}\"}} {n}");
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
    task_series(&mut out, &state.hub.series());
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

/// One histogram metric: name, help, bucket bounds and where a series keeps it.
type HistogramFamily = (
    &'static str,
    &'static str,
    &'static [f64; 12],
    fn(&Series) -> &Histogram,
);

/// `lovage_tasks_total{task,queue,state}` and the runtime and queue-wait histograms, from the
/// task events seen since the server started; at most [`MAX_SERIES`] (task, queue) pairs, the
/// rest under `(other)`.
fn task_series(out: &mut String, series: &[((String, String), Series)]) {
    let labels: Vec<String> = series
        .iter()
        .map(|((task, queue), _)| format!("task=\"{}\",queue=\"{}\"", esc(task), esc(queue)))
        .collect();
    head(
        out,
        "lovage_tasks_total",
        "counter",
        &format!(
            "Task events by task, queue and state since the server started ({MAX_SERIES} \
             task/queue pairs at most, then task=\"(other)\")."
        ),
    );
    for (l, (_, s)) in labels.iter().zip(series) {
        for ((_, state), n) in STATE_LABELS.iter().zip(s.states) {
            if n > 0 {
                let _ = writeln!(out, "lovage_tasks_total{{{l},state=\"{state}\"}} {n}");
            }
        }
    }
    let histograms: [HistogramFamily; 2] = [
        (
            "lovage_task_runtime_seconds",
            "Run time of finished attempts seen in the event stream since the server started.",
            &BUCKETS,
            |s| &s.runtime,
        ),
        (
            "lovage_task_queue_wait_seconds",
            "From sending to the start of the attempt that finished (a retried task's earlier \
             attempts included), since the server started.",
            &WAIT_BUCKETS,
            |s| &s.wait,
        ),
    ];
    for (name, help, bounds, pick) in histograms {
        head(out, name, "histogram", help);
        for (l, (_, s)) in labels.iter().zip(series) {
            let h = pick(s);
            if h.count == 0 {
                continue;
            }
            for (le, n) in bounds.iter().zip(h.buckets) {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
        }
    }
}
