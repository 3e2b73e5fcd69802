//! `lovage bench rate`: a global rate limit measured across worker processes.

use std::time::Duration;

use anyhow::Context;
use lovage::{parse_rate, Codec, Signature};
use serde_json::json;

use super::demo::send_and_wait;
use super::output::{self, BenchReport, Table};
use super::procs::{bench_broker, WorkerProcesses};
use super::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL; default: a fresh SQLite file in a temporary directory.
    #[arg(long, env = "LOVAGE_BENCH_BROKER")]
    broker: Option<String>,
    /// The limit on `lovage.noop`, e.g. 50/s.
    #[arg(long, default_value = "50/s")]
    limit: String,
    /// Seconds of tasks to send (at the limit).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let interval = parse_rate(&a.limit).map_err(|e| Exit::usage(e.to_string()))?;
    let per_s = 1.0 / interval.as_secs_f64();
    let broker = bench_broker(a.broker.as_deref())?;
    let (url, app) = (broker.url.clone(), broker.app.clone());
    let mut workers = WorkerProcesses::start(a.workers, &url, &["--concurrency", "2"])?;
    workers.wait_registered(&app, a.workers, Duration::from_secs(30))?;
    let n = (per_s * a.seconds as f64).round().max(2.0) as usize;
    let calls = (0..n)
        .map(|_| {
            let mut sig = Signature::new("lovage.noop", &[0u8; 0], Codec::Json).expect("encodes");
            sig.options.rate_limit = Some(a.limit.clone());
            sig
        })
        .collect();
    let (wall, ids, failures) = send_and_wait(&app, "rate-limited", calls)?;
    workers.stop();
    if let Some(f) = failures.first() {
        return Err(Exit::failed(format!("a task failed: {f}")));
    }
    // When each finished, from the result store: the achieved rate is (n - 1) tasks over the
    // span from the first to the last; the busiest second shows bursts.
    let mut done: Vec<i64> = app
        .records(&ids)
        .context("reading results")?
        .into_iter()
        .flatten()
        .map(|r| r.updated.as_millis())
        .collect();
    done.sort();
    let span_s = (done[done.len() - 1] - done[0]) as f64 / 1e3;
    let achieved = (done.len() - 1) as f64 / span_s.max(1e-9);
    let busiest = done
        .iter()
        .map(|t| done.iter().filter(|u| **u >= *t && **u < t + 1000).count())
        .max()
        .unwrap_or(0);
    let off = (achieved - per_s) / per_s * 100.0;
    let title = format!(
        "lovage bench rate: limit {} on lovage.noop, {n} tasks, {} worker processes",
        a.limit, a.workers
    );
    let mut t = Table::new(&[("measure", false), ("figure", true)]);
    t.row(vec!["limit".into(), format!("{per_s:.1}/s")]);
    t.row(vec![
        "achieved, first to last".into(),
        format!("{achieved:.1}/s ({off:+.1}%)"),
    ]);
    t.row(vec!["busiest second".into(), format!("{busiest} tasks")]);
    t.row(vec!["wall".into(), format!("{:.2} s", wall.as_secs_f64())]);
    let figures = json!({
        "limit_per_s": per_s,
        "tasks": n,
        "workers": a.workers,
        "achieved_per_s": (achieved * 10.0).round() / 10.0,
        "deviation_pct": (off * 10.0).round() / 10.0,
        "busiest_second": busiest,
        "wall_s": (wall.as_secs_f64() * 100.0).round() / 100.0,
    });
    output::select(a.json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures,
    });
    Ok(())
}
