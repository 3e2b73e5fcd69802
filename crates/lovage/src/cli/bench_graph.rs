//! `lovage bench graph`: what a delayed graph costs per node to build and per task to run, on
//! one local scheduler, with no-op tasks (Dask's measure of its scheduler overhead).

use std::time::Instant;

use anyhow::Context;
use lovage::graph::{
    Broker, BrokerFromCaller, Delayed, Graph, Inline, Processes, Scheduler, Threads,
};
use lovage::{ProcessPool, ThreadPool};
use serde_json::json;

use super::output::{self, si, BenchReport, Table};
use super::procs::{bench_cluster, BenchCluster};

/// A leaf: its own index.
#[lovage::task(name = "lovage.graph.leaf")]
pub fn leaf(i: u64) -> u64 {
    i
}

/// Joins two results (the tree's inner nodes).
#[lovage::task(name = "lovage.graph.combine")]
pub fn combine(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// One link of a chain, or one branch of a fan-out.
#[lovage::task(name = "lovage.graph.step")]
pub fn step(x: u64) -> u64 {
    x.wrapping_add(1)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shape {
    /// A binary reduction: n/2 leaves combined pairwise up to one root.
    Tree,
    /// Chains of 10 links.
    Chains,
    /// One root and n-1 tasks that each take its result.
    Fanout,
    /// The seeds' crawler: a synthetic site of n pages (8 links a page, duplicates and
    /// cycles), found at run time; on `threads` tasks spawn tasks in a pool scope, on `broker`
    /// each page's task spawns its links from inside into one `app.scope`.
    Crawl,
    /// No graph: Dask's `client.map` + `gather` of n no-ops through the futures client, on
    /// `--scheduler broker` (µs per task from the first send to the last value read back).
    Map,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Sched {
    Inline,
    Threads,
    Processes,
    /// Worker processes (`--workers` of them, 2 threads each) on a broker: `--broker URL`, or
    /// a temporary SQLite file; the graph is stored in the broker and the workers release
    /// each node's dependents.
    Broker,
    /// The same workers, but this process sends each node when its inputs are in (the
    /// client-scheduled path, for comparison).
    BrokerFromCaller,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in the graph.
    #[arg(long, default_value_t = 100_000)]
    nodes: usize,
    /// The graph's shape.
    #[arg(long, value_enum, default_value_t = Shape::Tree)]
    shape: Shape,
    /// Where it runs.
    #[arg(long, value_enum, default_value_t = Sched::Threads)]
    scheduler: Sched,
    /// Threads or processes of the pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Timed runs (a fresh graph each; the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
    /// The broker for `--scheduler broker` (default: a temporary SQLite file).
    #[arg(long)]
    broker: Option<String>,
    /// With a broker: the workers finish each task without running it (a fixed result is
    /// stored and its dependents released; HyperQueue's method), so the figure is the
    /// scheduling and broker cost alone.
    #[arg(long)]
    zero_worker: bool,
}

/// Builds the shape; returns the graph and the handles to compute (the sinks).
fn build(shape: Shape, n: usize) -> (Graph, Vec<Delayed<u64>>) {
    let g = Graph::with_capacity(n, n * 2);
    let mut outs = Vec::new();
    match shape {
        Shape::Tree => {
            let mut level: Vec<Delayed<u64>> = (0..n.div_ceil(2) as u64)
                .map(|i| leaf::delayed(&g, i))
                .collect();
            while level.len() > 1 {
                let next = level
                    .chunks(2)
                    .map(|p| match p {
                        [a, b] => combine::delayed(&g, *a, *b),
                        [a, ..] => *a,
                        [] => unreachable!("chunks are never empty"),
                    })
                    .collect();
                level = next;
            }
            outs.extend(level);
        }
        Shape::Chains => {
            for c in 0..n.div_ceil(10) as u64 {
                let mut x = leaf::delayed(&g, c);
                for _ in 1..10 {
                    x = step::delayed(&g, x);
                }
                outs.push(x);
            }
        }
        Shape::Fanout => {
            let root = leaf::delayed(&g, 0);
            outs.extend((1..n.max(2)).map(|_| step::delayed(&g, root)));
        }
        // Found at run time, or no graph at all: `run_crawl`, `run_map`.
        Shape::Crawl | Shape::Map => {}
    }
    (g, outs)
}

/// This process's resident memory, current and peak (VmRSS, VmHWM), in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// `us` microseconds per `unit`, with the rate: `12.345 µs/task (81.0k tasks/s)`.
fn per_unit(us: f64, unit: &str) -> String {
    format!("{us:.3} µs/{unit} ({} {unit}s/s)", si(1e6 / us))
}

/// Prints a run's report: its (measure, value) rows as a table, and `figures` as the JSON
/// line with `--json`.
fn report(json: bool, title: String, rows: Vec<[String; 2]>, figures: serde_json::Value) {
    let mut t = Table::new(&[("measure", false), ("value", true)]);
    for row in rows {
        t.row(row.into());
    }
    output::select(json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures,
    });
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.shape {
        Shape::Crawl => return run_crawl(a),
        Shape::Map => return run_map(a),
        Shape::Tree | Shape::Chains | Shape::Fanout => {}
    }
    anyhow::ensure!(
        !a.zero_worker || matches!(a.scheduler, Sched::Broker | Sched::BrokerFromCaller),
        "--zero-worker is for the broker schedulers (--scheduler broker or broker-from-caller): \
         it changes what the worker processes do"
    );
    let n = a.nodes.max(2);
    let threads;
    let procs;
    // The broker and its worker processes, kept until the runs are over; declared before the
    // client, so that the client goes first, then the workers, then the broker's keys.
    let cluster: BenchCluster;
    let client;
    let scheduler: Scheduler<'_> = match a.scheduler {
        Sched::Inline => Inline,
        Sched::Threads => {
            threads = ThreadPool::builder()
                .workers(a.workers.max(1))
                .build()
                .context("starting the thread pool")?;
            Threads(&threads)
        }
        Sched::Processes => {
            procs = ProcessPool::builder()
                .workers(a.workers.max(1))
                .build()
                .context("starting the process pool")?;
            Processes(&procs)
        }
        Sched::Broker | Sched::BrokerFromCaller => {
            let mut extra = vec!["--concurrency", "2"];
            if a.zero_worker {
                extra.push("--zero-worker");
            }
            cluster = bench_cluster(a.broker.as_deref(), a.workers.max(1), &extra)?;
            client = cluster
                .broker
                .app
                .client()
                .context("starting the futures client")?;
            if matches!(a.scheduler, Sched::Broker) {
                Broker(&client)
            } else {
                BrokerFromCaller(&client)
            }
        }
    };
    let (base_rss, _) = rss();
    let (mut build_us, mut task_us, mut nodes, mut ran) = (Vec::new(), Vec::new(), 0, 0);
    let mut peak_growth = 0u64;
    for _ in 0..a.runs.max(1) {
        let (before, _) = rss();
        let t = Instant::now();
        let (g, outs) = build(a.shape, n);
        let built = t.elapsed();
        let t = Instant::now();
        let values = g
            .compute(scheduler, outs)
            .map_err(|e| anyhow::anyhow!("the graph failed: {e}"))?;
        let took = t.elapsed();
        std::hint::black_box(values);
        let st = g.last_stats();
        nodes = st.nodes;
        ran = st.ran;
        build_us.push(built.as_secs_f64() * 1e6 / st.nodes as f64);
        task_us.push(took.as_secs_f64() * 1e6 / st.ran.max(1) as f64);
        let (_, peak) = rss();
        peak_growth = peak_growth.max(peak.saturating_sub(before.min(base_rss)));
        drop(g);
    }
    let (_, peak) = rss();
    let (build_us, task_us) = (median(build_us), median(task_us));
    let bytes_per_node = peak_growth as f64 / nodes.max(1) as f64;

    let title = format!(
        "lovage bench graph: {:?} of {nodes} nodes on {:?} ({} workers{}), median of {} runs",
        a.shape,
        a.scheduler,
        a.workers,
        if a.zero_worker { ", zero-worker" } else { "" },
        a.runs.max(1)
    );
    let rows = vec![
        ["build".into(), per_unit(build_us, "node")],
        [format!("run ({ran} tasks)"), per_unit(task_us, "task")],
        [
            "memory".into(),
            format!(
                "peak RSS {:.1} MB; graph + run state ≈ {bytes_per_node:.0} bytes/node",
                peak as f64 / 1e6
            ),
        ],
    ];
    let figures = json!({
        "shape": format!("{:?}", a.shape).to_lowercase(),
        "scheduler": format!("{:?}", a.scheduler).to_lowercase(),
        "workers": a.workers,
        "zero_worker": a.zero_worker,
        "nodes": nodes,
        "tasks": ran,
        "build_us_per_node": (build_us * 1e4).round() / 1e4,
        "us_per_task": (task_us * 1e4).round() / 1e4,
        "peak_rss_mb": (peak as f64 / 1e5).round() / 10.0,
        "bytes_per_node": bytes_per_node.round(),
    });
    report(a.json, title, rows, figures);
    Ok(())
}

/// `--shape crawl`: pages found at run time, each fetched once (checked against a serial
/// crawl); µs per page fetched.
fn run_crawl(a: Args) -> anyhow::Result<()> {
    use lovage::workloads::crawl::{crawl, on_threads, page_key, reachable};
    anyhow::ensure!(
        !a.zero_worker,
        "--zero-worker does not apply to --shape crawl: its pages are found by running the \
         tasks, so a worker that skips them would crawl one page"
    );
    let size = a.nodes.max(2) as u64;
    let expected = reachable(size);
    let mut task_us = Vec::new();
    // Kept until the report is out (dropped: workers stopped, the broker's keys deleted).
    let mut cluster = None;
    match a.scheduler {
        Sched::Threads => {
            let pool = ThreadPool::builder()
                .workers(a.workers.max(1))
                .build()
                .context("starting the thread pool")?;
            for _ in 0..a.runs.max(1) {
                let t = Instant::now();
                let pages = on_threads(&pool, size);
                let took = t.elapsed();
                anyhow::ensure!(
                    pages == expected,
                    "{pages} pages fetched, {expected} reachable"
                );
                task_us.push(took.as_secs_f64() * 1e6 / pages as f64);
            }
        }
        Sched::Broker => {
            let c = bench_cluster(
                a.broker.as_deref(),
                a.workers.max(1),
                &["--concurrency", "2"],
            )?;
            for _ in 0..a.runs.max(1) {
                let t = Instant::now();
                let report = c
                    .broker
                    .app
                    .scope(|s| s.spawn_keyed(&page_key(0), crawl::s(0, size)))
                    .context("the crawl's scope")?;
                let took = t.elapsed();
                report.value.context("sending page 0")?;
                anyhow::ensure!(
                    report.spawned as usize == expected && report.failed.is_empty(),
                    "{} pages counted ({} failed), {expected} reachable",
                    report.spawned,
                    report.failed.len()
                );
                task_us.push(took.as_secs_f64() * 1e6 / report.spawned as f64);
            }
            cluster = Some(c);
        }
        other => anyhow::bail!(
            "--shape crawl runs on --scheduler threads or broker, not {other:?}: its pages are \
             found at run time by tasks that spawn tasks"
        ),
    }
    let task_us = median(task_us);
    let (_, peak) = rss();
    let title = format!(
        "lovage bench graph: crawl of a {size}-page site ({expected} reachable) on {:?} ({} workers), median of {} runs",
        a.scheduler,
        a.workers,
        a.runs.max(1)
    );
    let rows = vec![[
        format!("crawl ({expected} pages)"),
        per_unit(task_us, "page"),
    ]];
    let figures = json!({
        "shape": "crawl",
        "scheduler": format!("{:?}", a.scheduler).to_lowercase(),
        "workers": a.workers,
        "nodes": size,
        "tasks": expected,
        "build_us_per_node": 0.0,
        "us_per_task": (task_us * 1e4).round() / 1e4,
        "peak_rss_mb": (peak as f64 / 1e5).round() / 10.0,
    });
    report(a.json, title, rows, figures);
    drop(cluster);
    Ok(())
}

/// `--shape map`: `client.map(step::s, 0..n)` then `gather`, checked; µs per task from the
/// first send to the last value read back (Dask's `client.map` + `client.gather`).
fn run_map(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(a.scheduler, Sched::Broker | Sched::BrokerFromCaller),
        "--shape map runs on --scheduler broker, not {:?}: it measures the futures client",
        a.scheduler
    );
    let n = a.nodes.max(1) as u64;
    let c = bench_cluster(
        a.broker.as_deref(),
        a.workers.max(1),
        &["--concurrency", "2"],
    )?;
    let client = c
        .broker
        .app
        .client()
        .context("starting the futures client")?;
    // Warm-up, as `bench queue` does: the workers' first tasks open their connections.
    client
        .gather(
            client
                .map(step::s, 0..200u64)
                .context("sending the warm-up")?,
        )
        .map_err(|e| anyhow::anyhow!("a warm-up task failed: {e}"))?;
    let (mut task_us, mut send_us) = (Vec::new(), Vec::new());
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        let futures = client.map(step::s, 0..n).context("client.map")?;
        let sent = t.elapsed();
        let values = client
            .gather(futures)
            .map_err(|e| anyhow::anyhow!("a mapped task failed: {e}"))?;
        let took = t.elapsed();
        anyhow::ensure!(
            values.len() as u64 == n && values.iter().zip(1..).all(|(v, want)| *v == want),
            "client.map gave back wrong values"
        );
        task_us.push(took.as_secs_f64() * 1e6 / n as f64);
        send_us.push(sent.as_secs_f64() * 1e6 / n as f64);
    }
    let (task_us, send_us) = (median(task_us), median(send_us));
    let (_, peak) = rss();
    let title = format!(
        "lovage bench graph: client.map of {n} no-ops on {} ({} workers × 2 threads), median of {} runs",
        c.broker.shown,
        a.workers,
        a.runs.max(1)
    );
    let rows = vec![
        ["send (client.map)".into(), per_unit(send_us, "task")],
        [
            format!("map + gather ({n} tasks)"),
            per_unit(task_us, "task"),
        ],
    ];
    let figures = json!({
        "shape": "map",
        "scheduler": format!("{:?}", a.scheduler).to_lowercase(),
        "workers": a.workers,
        "nodes": n,
        "tasks": n,
        "build_us_per_node": 0.0,
        "send_us_per_task": (send_us * 1e4).round() / 1e4,
        "us_per_task": (task_us * 1e4).round() / 1e4,
        "tasks_per_s": (1e6 / task_us).round(),
        "peak_rss_mb": (peak as f64 / 1e5).round() / 10.0,
    });
    report(a.json, title, rows, figures);
    // The client first (its last releases), then the workers, then the broker's keys.
    drop(client);
    drop(c);
    Ok(())
}
