//! `lovage bench flow` (alias `chord`): what workflows cost over plain tasks, with real worker
//! processes — a chord of N members against the same N plain tasks, and a long chain.

use std::time::{Duration, Instant};

use anyhow::Context;
use lovage::flow::{chain, chord, Canvas};
use lovage::{App, Codec, Signature};
use serde_json::json;

use super::demo::send_and_wait;
use super::output::{self, si, BenchReport, Table};
use super::procs::{bench_broker, WorkerProcesses};
use super::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL; default: a fresh SQLite file in a temporary directory.
    #[arg(long, env = "LOVAGE_BENCH_BROKER")]
    broker: Option<String>,
    /// Members of the chord (and plain tasks to compare with).
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Steps of the chain.
    #[arg(long, default_value_t = 1000)]
    chain_steps: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker process.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Timed runs of each measure (the median is shown), after one warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

fn call(task: &str, args: &impl serde::Serialize) -> Signature {
    Signature::new(task, args, Codec::Json).expect("encodes")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

pub fn run(a: Args) -> Result<(), Exit> {
    let broker = bench_broker(a.broker.as_deref())?;
    let (url, app) = (broker.url.clone(), broker.app.clone());
    let concurrency = a.concurrency.to_string();
    let mut workers = WorkerProcesses::start(a.workers, &url, &["--concurrency", &concurrency])?;
    workers.wait_registered(&app, a.workers, Duration::from_secs(30))?;

    let n = a.members.max(1);
    let steps = a.chain_steps.max(1);
    let (mut plain, mut chords, mut chains) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=a.runs.max(1) {
        let (wall, _, failures) = send_and_wait(
            &app,
            "plain",
            (0..n).map(|_| call("lovage.echo", &[1])).collect(),
        )?;
        if let Some(f) = failures.first() {
            return Err(Exit::failed(format!("a plain task failed: {f}")));
        }
        let chord_s = time_chord(&app, n)?;
        let chain_s = time_chain(&app, steps)?;
        if run > 0 {
            plain.push(wall.as_secs_f64());
            chords.push(chord_s);
            chains.push(chain_s);
        }
    }
    workers.stop();
    let (plain_s, chord_s, chain_s) = (median(plain), median(chords), median(chains));
    let ratio = chord_s / plain_s;
    let steps_per_s = steps as f64 / chain_s;

    let shown_url = &broker.shown;
    let title = format!(
        "lovage bench flow: {shown_url}, {} worker processes x {} threads, median of {} runs",
        a.workers, a.concurrency, a.runs
    );
    let mut t = Table::new(&[("measure", false), ("time", true), ("rate", true)]);
    t.row(vec![
        format!("{n} plain tasks, results stored"),
        format!("{:.3} s", plain_s),
        format!("{} tasks/s", si(n as f64 / plain_s)),
    ]);
    t.row(vec![
        format!("chord of {n} members + callback"),
        format!("{:.3} s ({ratio:.2}x plain)", chord_s),
        format!("{} members/s", si(n as f64 / chord_s)),
    ]);
    t.row(vec![
        format!("chain of {steps} steps"),
        format!("{:.3} s", chain_s),
        format!("{} steps/s", si(steps_per_s)),
    ]);
    let figures = json!({
            "broker": shown_url,
            "workers": a.workers,
            "concurrency": a.concurrency,
            "members": n,
            "plain_s": (plain_s * 1e4).round() / 1e4,
            "chord_s": (chord_s * 1e4).round() / 1e4,
            "chord_over_plain": (ratio * 100.0).round() / 100.0,
            "chain_steps": steps,
            "chain_s": (chain_s * 1e4).round() / 1e4,
            "chain_steps_per_s": steps_per_s.round(),
    });
    output::select(a.json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures,
    });
    Ok(())
}

/// A chord of `n` members `echo(1)` summed by `lovage.sum`: seconds from send to its result.
fn time_chord(app: &App, n: usize) -> Result<f64, Exit> {
    let wf = chord(
        (0..n).map(|_| call("lovage.echo", &[1])),
        call("lovage.sum", &[0u8; 0]),
    );
    let start = Instant::now();
    let sent = lovage::flow::send(app, &wf).context("sending the chord")?;
    let total: f64 = sent
        .get(Duration::from_secs(600))
        .map_err(|e| Exit::failed(format!("the chord failed: {e}")))?;
    if total != n as f64 {
        return Err(Exit::failed(format!(
            "the chord's callback summed {total}, expected {n}"
        )));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A chain of `steps` echo steps passing 0 along: seconds from send to its result.
fn time_chain(app: &App, steps: usize) -> Result<f64, Exit> {
    let first = Canvas::from(call("lovage.echo", &[0]));
    let rest = (1..steps).map(|_| Canvas::from(call("lovage.echo", &[0u8; 0])));
    let wf = chain(std::iter::once(first).chain(rest));
    let start = Instant::now();
    let sent = lovage::flow::send(app, &wf).context("sending the chain")?;
    let out: i64 = sent
        .get(Duration::from_secs(600))
        .map_err(|e| Exit::failed(format!("the chain failed: {e}")))?;
    if out != 0 {
        return Err(Exit::failed(format!(
            "the chain returned {out}, expected 0"
        )));
    }
    Ok(start.elapsed().as_secs_f64())
}
