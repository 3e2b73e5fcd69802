//! `lovage bench server`: the operations server under load, as issue 15 judges it. A fresh
//! broker (SQLite in a temporary directory unless `--broker`) is seeded with tasks; a real
//! `lovage server` process serves it; the bench measures from outside: the server's resident
//! memory at 10,000 tasks and at `--tasks`, the latency of `/api/v1/overview` and of a
//! filtered first page of `/api/v1/tasks`, the event fan-out to SSE clients (with one stalled
//! client), and worker throughput with events on and off in the same run.

mod fanout;
mod http;
mod server_proc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lovage::{App, Codec, Signature};
use serde_json::{json, Map, Value};

use super::demo::send_and_wait;
use super::output::{self, si, BenchReport, Table};
use super::procs::{bench_broker, rss_kib, WorkerProcesses};
use super::Exit;
use http::Conn;
use server_proc::ServerProcess;

/// Tasks at the first memory and latency measurement.
const SMALL: usize = 10_000;
/// Queues the seeded tasks are spread over (no worker consumes them).
const SEED_QUEUES: usize = 4;
/// The filtered first page whose latency is measured.
const TASKS_PAGE: &str = "/api/v1/tasks?state=PENDING&queue=seed-1&limit=50";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL; default: a fresh SQLite file in a temporary directory.
    #[arg(long, env = "LOVAGE_BENCH_BROKER")]
    broker: Option<String>,
    /// Tasks seeded before the second measurement (the first is at 10,000).
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Requests per endpoint for the latency figures.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Events published per fan-out stage.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Publishing rates of the fan-out stages, events/s (0: as fast as the broker takes them).
    #[arg(long, value_delimiter = ',', default_value = "50000,100000,0")]
    event_rates: Vec<u64>,
    /// SSE clients that keep up (one stalled client is added).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// No-op tasks per worker throughput round.
    #[arg(long, default_value_t = 20_000)]
    worker_tasks: usize,
    /// Rounds of events off / on (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker processes in the throughput rounds.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker process.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

/// Latency percentiles of one endpoint, in ms.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p95: f64,
    max: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Seeds tasks until the broker holds `upto` (counting from `have`), in batches of 1000
/// spread over the seed queues and two task names.
fn seed(app: &App, have: usize, upto: usize) -> anyhow::Result<()> {
    let bar = ProgressBar::new((upto - have) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} ({elapsed}, {per_sec})")
            .expect("valid template"),
    );
    bar.set_message("seeding");
    let mut i = have;
    while i < upto {
        let k = (upto - i).min(1000);
        let batch: Vec<Signature> = (i..i + k)
            .map(|j| {
                let name = if j % 2 == 0 {
                    "bench.alpha"
                } else {
                    "bench.beta"
                };
                let mut sig =
                    Signature::new(name, &(j, "seeded by lovage bench server"), Codec::Json)
                        .expect("encodes");
                sig.options.queue = Some(format!("seed-{}", j % SEED_QUEUES));
                sig
            })
            .collect();
        app.send_batch(batch).context("seeding tasks")?;
        i += k;
        bar.inc(k as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// `requests` GETs of the overview and of the filtered page, alternating.
fn latencies(addr: SocketAddr, requests: usize) -> anyhow::Result<(Latency, Latency)> {
    let mut conn = Conn::new(addr);
    // Warm up: the connection, the server's statement cache, the broker's pages.
    for _ in 0..5 {
        conn.get("/api/v1/overview")?;
        conn.get(TASKS_PAGE)?;
    }
    let (mut ov, mut tp) = (Vec::new(), Vec::new());
    for _ in 0..requests.max(1) {
        let t = Instant::now();
        conn.get("/api/v1/overview")?;
        ov.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        conn.get(TASKS_PAGE)?;
        tp.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let stat = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        Latency {
            p50: percentile(&v, 0.5),
            p95: percentile(&v, 0.95),
            max: v[v.len() - 1],
        }
    };
    Ok((stat(ov), stat(tp)))
}

/// The server's RSS in KiB after it settled.
fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    std::thread::sleep(Duration::from_millis(500));
    rss_kib(pid).context("the server process is gone")
}

/// Worker throughput (tasks/s end to end) with events off and on, rounds alternating.
fn worker_rounds(a: &Args, url: &str, app: &App) -> Result<(Vec<f64>, Vec<f64>), Exit> {
    let concurrency = a.concurrency.to_string();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..a.rounds.max(1) * 2 {
        let events = round % 2 == 1;
        let mut extra = vec!["--concurrency", &concurrency];
        if events {
            extra.push("--events");
        }
        let mut workers = WorkerProcesses::start(a.workers, url, &extra)?;
        workers.wait_registered(app, a.workers, Duration::from_secs(30))?;
        let noop = || Signature::new("lovage.noop", &[0u8; 0], Codec::Json).expect("encodes");
        send_and_wait(app, "warm-up", (0..200).map(|_| noop()).collect())?;
        let label = if events { "events on" } else { "events off" };
        let n = a.worker_tasks.max(1);
        let (wall, _, failures) = send_and_wait(app, label, (0..n).map(|_| noop()).collect())?;
        workers.stop();
        if !failures.is_empty() {
            return Err(Exit::failed(format!(
                "{} tasks failed, e.g. {}",
                failures.len(),
                failures[0]
            )));
        }
        let rate = n as f64 / wall.as_secs_f64();
        if events { &mut on } else { &mut off }.push(rate);
    }
    Ok((off, on))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

fn range(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{}–{}", si(min), si(max))
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.tasks < SMALL {
        return Err(Exit::usage(format!(
            "--tasks {}: at least {SMALL} (the first measurement is at {SMALL})",
            a.tasks
        )));
    }
    let broker = bench_broker(a.broker.as_deref())?;
    let (url, app) = (broker.url.clone(), broker.app.clone());

    seed(&app, 0, SMALL)?;
    let server = ServerProcess::start(&url)?;
    let (ov_small, tp_small) = latencies(server.addr, a.requests)?;
    let rss_small = settled_rss(server.pid())?;

    seed(&app, SMALL, a.tasks)?;
    let (ov_big, tp_big) = latencies(server.addr, a.requests)?;
    let rss_big = settled_rss(server.pid())?;

    let mut fans = Vec::new();
    for &rate in &a.event_rates {
        fans.push(fanout::run(
            &app,
            server.addr,
            server.pid(),
            a.events,
            rate,
            a.clients,
        )?);
    }
    let (off, on) = worker_rounds(&a, &url, &app)?;
    let rss_end = settled_rss(server.pid())?;
    drop(server);

    let mib = |k: u64| k as f64 / 1024.0;
    let (on_m, off_m) = (median(&on), median(&off));

    let title = format!(
        "lovage bench server: {}, {} tasks, lovage server as a child process on 127.0.0.1",
        broker.shown, a.tasks
    );
    let mut t = Table::new(&[("measure", false), ("figure", true)]);
    let mut row = |m: String, f: String| t.row(vec![m, f]);
    row(
        format!("server RSS at {SMALL} tasks → {} tasks", a.tasks),
        format!(
            "{:.1} → {:.1} MiB ({:+.1} MiB)",
            mib(rss_small),
            mib(rss_big),
            mib(rss_big) - mib(rss_small)
        ),
    );
    for (label, small, big) in [
        ("GET /overview", ov_small, ov_big),
        ("GET /tasks (PENDING, queue, 50)", tp_small, tp_big),
    ] {
        row(
            format!("{label} p50 / p95, {SMALL} tasks"),
            format!("{:.2} / {:.2} ms", small.p50, small.p95),
        );
        row(
            format!("{label} p50 / p95 (max), {} tasks", a.tasks),
            format!("{:.2} / {:.2} ({:.1}) ms", big.p50, big.p95, big.max),
        );
    }
    for fan in &fans {
        let asked = match fan.rate {
            0 => "unpaced".to_owned(),
            r => format!("{}/s", si(r as f64)),
        };
        row(
            format!("events {asked}: published, fanned out to {} SSE", a.clients),
            // With a loss the clients stopped at their first `lagged`: no rate to speak of.
            match fan.lost() {
                0 => format!(
                    "{}, {} events/s, 0 lost",
                    si(fan.publish_per_s),
                    si(fan.delivered_per_s)
                ),
                lost => format!("{}, clients lagged, {lost} lost", si(fan.publish_per_s)),
            },
        );
        row(
            format!("events {asked}: stalled client; server peak RSS"),
            format!(
                "{} events, lagged ×{} ({} skipped); {:.1} MiB",
                fan.stalled.events,
                fan.stalled.lagged,
                fan.stalled.missed,
                mib(fan.server_peak_rss_kib)
            ),
        );
    }
    row(
        "server RSS at the end".into(),
        format!("{:.1} MiB", mib(rss_end)),
    );
    row(
        "workers, events off: median (range)".into(),
        format!("{} tasks/s ({})", si(off_m), range(&off)),
    );
    row(
        "workers, events on: median (range)".into(),
        format!(
            "{} tasks/s ({}), {:+.1}%",
            si(on_m),
            range(&on),
            (on_m / off_m - 1.0) * 100.0
        ),
    );

    let lat = |l: Latency| json!({"p50_ms": round3(l.p50), "p95_ms": round3(l.p95), "max_ms": round3(l.max)});
    let mut m = Map::new();
    m.insert("broker".into(), json!(broker.shown));
    m.insert("tasks".into(), json!(a.tasks));
    m.insert("server_rss_kib_at_10k".into(), json!(rss_small));
    m.insert("server_rss_kib_at_tasks".into(), json!(rss_big));
    m.insert("server_rss_kib_end".into(), json!(rss_end));
    m.insert("overview_at_10k".into(), lat(ov_small));
    m.insert("overview_at_tasks".into(), lat(ov_big));
    m.insert("tasks_page_at_10k".into(), lat(tp_small));
    m.insert("tasks_page_at_tasks".into(), lat(tp_big));
    m.insert("sse_clients".into(), json!(a.clients));
    m.insert(
        "fanout".into(),
        json!(fans
            .iter()
            .map(|f| json!({
                "rate_asked": f.rate,
                "events": f.events,
                "published_per_s": f.publish_per_s.round(),
                "fanned_out_per_s": (f.lost() == 0).then(|| f.delivered_per_s.round()),
                "lost_keeping_up": f.lost(),
                "stalled_events": f.stalled.events,
                "stalled_lagged": f.stalled.lagged,
                "stalled_skipped": f.stalled.missed,
                "server_peak_rss_kib": f.server_peak_rss_kib,
            }))
            .collect::<Vec<_>>()),
    );
    m.insert(
        "workers_events_off_per_s".into(),
        json!(off.iter().map(|r| r.round()).collect::<Vec<_>>()),
    );
    m.insert(
        "workers_events_on_per_s".into(),
        json!(on.iter().map(|r| r.round()).collect::<Vec<_>>()),
    );
    output::select(a.json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures: Value::Object(m),
    });
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
