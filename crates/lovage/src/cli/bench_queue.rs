//! `lovage bench queue`: the distributed queue measured end to end with real worker processes.

use std::time::{Duration, Instant};

use anyhow::Context;
use lovage::{Codec, Signature};
use serde_json::{json, Map, Value};

use super::demo::send_and_wait;
use super::output::{self, si, BenchReport, Table};
use super::procs::{bench_broker, rss_kib, RssSampler, WorkerProcesses};
use super::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL; default: a fresh SQLite file in a temporary directory.
    #[arg(long, env = "LOVAGE_BENCH_BROKER")]
    broker: Option<String>,
    /// No-op tasks in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker process.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Sequential submit→result round trips for the latency figures.
    #[arg(long, default_value_t = 1000)]
    round_trips: usize,
    /// Start the workers with events on (`lovage worker -E`), to weigh what they cost.
    #[arg(long)]
    worker_events: bool,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

fn noop() -> Signature {
    Signature::new("lovage.noop", &[0u8; 0], Codec::Json).expect("encodes")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(a: Args) -> Result<(), Exit> {
    let broker = bench_broker(a.broker.as_deref())?;
    let (url, app) = (broker.url.clone(), broker.app.clone());

    // Enqueue alone: batches of 1000 into a queue no worker reads, then purged.
    let n = a.tasks.max(1);
    let mut batch = Vec::with_capacity(1000);
    let start = Instant::now();
    for i in 0..n {
        let mut sig = noop();
        sig.options.queue = Some("lovage-bench-enqueue".into());
        batch.push(sig);
        if batch.len() == 1000 || i + 1 == n {
            app.send_batch(std::mem::take(&mut batch))
                .context("enqueueing")?;
        }
    }
    let enqueue_per_s = n as f64 / start.elapsed().as_secs_f64();
    app.purge("lovage-bench-enqueue").context("purging")?;

    let concurrency = a.concurrency.to_string();
    let mut worker_args = vec!["--concurrency", &concurrency];
    if a.worker_events {
        worker_args.push("--events");
    }
    let mut workers = WorkerProcesses::start(a.workers, &url, &worker_args)?;
    workers.wait_registered(&app, a.workers, Duration::from_secs(30))?;
    // Warm up: workers' pools and caches, the broker's pages.
    let (_, _, failures) = send_and_wait(&app, "warm-up", (0..200).map(|_| noop()).collect())?;
    if !failures.is_empty() {
        return Err(Exit::failed(format!(
            "warm-up tasks failed: {}",
            failures[0]
        )));
    }

    // End to end: enqueue every task, wait for every result; sample the workers' memory.
    let idle_rss = workers
        .pids()
        .iter()
        .filter_map(|p| rss_kib(*p))
        .max()
        .unwrap_or(0);
    let sampler = RssSampler::start(workers.pids());
    let (wall, _, failures) = send_and_wait(&app, "no-op", (0..n).map(|_| noop()).collect())?;
    let max_rss = sampler.finish();
    if !failures.is_empty() {
        return Err(Exit::failed(format!(
            "{} tasks failed, e.g. {}",
            failures.len(),
            failures[0]
        )));
    }
    let end_to_end_per_s = n as f64 / wall.as_secs_f64();

    // Latency: one task at a time, submit → result.
    let mut lat = Vec::with_capacity(a.round_trips);
    for _ in 0..a.round_trips.max(1) {
        let t = Instant::now();
        let id = app.send_signature(noop()).context("sending")?;
        let rec = app
            .wait_record(id, Duration::from_secs(60))
            .context("waiting")?;
        if !rec.is_some_and(|r| r.state.is_final()) {
            return Err(Exit::failed("a latency round trip timed out after 60 s"));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    workers.stop();
    lat.sort_by(|x, y| x.total_cmp(y));
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    let shown_url = &broker.shown;
    let title = format!(
        "lovage bench queue: {shown_url}, {} worker processes x {} threads{}, {n} no-op tasks, {} round trips",
        a.workers,
        a.concurrency,
        if a.worker_events { " (events on)" } else { "" },
        a.round_trips
    );
    let mut t = Table::new(&[("measure", false), ("figure", true)]);
    t.row(vec![
        "enqueue (batches of 1000)".into(),
        format!("{} tasks/s", si(enqueue_per_s)),
    ]);
    t.row(vec![
        "end to end, results stored".into(),
        format!("{} tasks/s", si(end_to_end_per_s)),
    ]);
    t.row(vec![
        "submit→result latency p50".into(),
        format!("{p50:.2} ms"),
    ]);
    t.row(vec![
        "submit→result latency p99".into(),
        format!("{p99:.2} ms"),
    ]);
    t.row(vec![
        "worker memory, idle → peak".into(),
        format!(
            "{:.1} → {:.1} MiB",
            idle_rss as f64 / 1024.0,
            max_rss as f64 / 1024.0
        ),
    ]);
    let mut m = Map::new();
    m.insert("broker".into(), json!(shown_url));
    m.insert("workers".into(), json!(a.workers));
    m.insert("concurrency".into(), json!(a.concurrency));
    m.insert("tasks".into(), json!(n));
    m.insert("worker_events".into(), json!(a.worker_events));
    m.insert("enqueue_per_s".into(), json!(enqueue_per_s.round()));
    m.insert("end_to_end_per_s".into(), json!(end_to_end_per_s.round()));
    m.insert(
        "p50_latency_ms".into(),
        json!((p50 * 1000.0).round() / 1000.0),
    );
    m.insert(
        "p99_latency_ms".into(),
        json!((p99 * 1000.0).round() / 1000.0),
    );
    m.insert("worker_idle_rss_kib".into(), json!(idle_rss));
    m.insert("worker_max_rss_kib".into(), json!(max_rss));
    output::select(a.json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures: Value::Object(m),
    });
    Ok(())
}
