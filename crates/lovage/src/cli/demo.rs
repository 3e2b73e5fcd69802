//! `lovage demo`: the whole queue on one machine, with nothing to install — an embedded SQLite
//! broker in a temporary directory, two worker processes, the seeds' workloads sent through it.

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lovage::workloads::{fib, pi, primes, split_range};
use lovage::{App, Codec, Signature, TaskId};
use serde::de::IgnoredAny;
use serde::Serialize;

use super::outcome::{outcome, Outcome};
use super::output::{self, DemoPhase, DemoReport};
use super::procs::WorkerProcesses;
use super::Exit;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// No-op tasks in the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Small sizes: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object at the end: {"broker", "workers", "pids", "phases": [{"name",
    /// "what", "tasks", "wall_s", "tasks_per_s", "serial_s", "speedup"}]}.
    #[arg(long)]
    json: bool,
    /// Instead of the queue: the seed's e-commerce mini project on data frames (50M rows, or
    /// 200k with --quick) on a thread pool, then on --workers worker processes through an
    /// embedded SQLite broker, each step timed.
    #[cfg(feature = "frames")]
    #[arg(long)]
    frames: bool,
}

/// Sends `calls` in one batch and waits for every result with a progress bar.
/// Returns the wall time from sending to the last result, the ids, and the failures.
pub fn send_and_wait(
    app: &App,
    label: &str,
    calls: Vec<Signature>,
) -> anyhow::Result<(Duration, Vec<TaskId>, Vec<String>)> {
    let bar = ProgressBar::new(calls.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} ({elapsed})")
            .expect("valid template"),
    );
    bar.set_message(label.to_owned());
    let start = Instant::now();
    let ids = app.send_batch(calls).context("sending tasks")?;
    let failures = wait_all(app, &ids, &bar)?;
    let took = start.elapsed();
    bar.finish_and_clear();
    Ok((took, ids, failures))
}

/// Waits for every id, ticking `bar`; returns a line per task that did not succeed.
///
/// Reads results in batches (one round trip per thousand on Redis) and blocks on the first
/// unfinished id only when a batch is not done yet.
pub fn wait_all(app: &App, ids: &[TaskId], bar: &ProgressBar) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let mut rest = ids;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(1000)];
        let recs = app.records(chunk)?;
        let done = recs
            .iter()
            .take_while(|r| r.as_ref().is_some_and(|r| r.state.is_final()))
            .count();
        for (id, rec) in chunk.iter().zip(&recs).take(done) {
            if let Outcome::Failed { state, error } = outcome::<IgnoredAny>(rec.as_ref()) {
                failures.push(format!("{id}: {state} {error}"));
            }
        }
        bar.inc(done as u64);
        let left = chunk.len() - done;
        rest = &rest[done..];
        if left > 0 {
            // Wait before reading again: for the batch's last task (tasks run roughly in order,
            // so by then most of the batch is done), or, if that one is done, the first
            // unfinished one.
            let last_done = recs
                .last()
                .is_some_and(|r| r.as_ref().is_some_and(|r| r.state.is_final()));
            let target = if last_done {
                rest[0]
            } else {
                chunk[chunk.len() - 1]
            };
            let rec = app.wait_record(target, Duration::from_secs(600))?;
            if !rec.is_some_and(|r| r.state.is_final()) {
                // Nothing finished for ten minutes: give up on the rest of this batch.
                let stuck = &rest[..left];
                failures.extend(
                    stuck
                        .iter()
                        .map(|id| format!("{id}: no result within 10 minutes")),
                );
                bar.inc(left as u64);
                rest = &rest[left..];
            }
        }
    }
    Ok(failures)
}

/// Sum of the decoded `u64` results of `ids`.
fn sum_results(app: &App, ids: &[TaskId]) -> anyhow::Result<u64> {
    let mut total = 0;
    for id in ids {
        let rec = app.wait_record(*id, Duration::from_secs(600))?;
        total += match outcome::<u64>(rec.as_ref()) {
            Outcome::Done(v) => v,
            Outcome::Failed { state, error } => anyhow::bail!("task {id} {state}: {error}"),
            Outcome::Unfinished(state) => {
                anyhow::bail!("task {id} is {state}, not finished after 10 minutes")
            }
        };
    }
    Ok(total)
}

fn call<A: Serialize>(task: &str, args: &A) -> Signature {
    Signature::new(task, args, Codec::Json).expect("arguments encode")
}

pub fn run(a: DemoArgs) -> Result<(), Exit> {
    #[cfg(feature = "frames")]
    if a.frames {
        return frames(&a);
    }
    let dir = tempfile::Builder::new()
        .prefix("lovage-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let app = App::connect(&url).context("opening the demo broker")?;
    let out = output::select(a.json);
    let mut workers = WorkerProcesses::start(a.workers, &url, &["--concurrency", "1"])?;
    workers.wait_registered(&app, a.workers, Duration::from_secs(30))?;
    let pids = workers.pids();
    out.demo_started(&url, &pids);

    let quick = a.quick;
    let mut phases = Vec::new();

    // 1. Throughput: many tiny tasks.
    let n = if quick { 500 } else { a.tasks };
    let (wall, _) = timed_phase(
        &app,
        "no-op",
        (0..n).map(|_| call("lovage.noop", &[0u8; 0])).collect(),
    )?;
    phases.push(DemoPhase {
        name: "no-op",
        what: format!("{n} empty tasks, results stored"),
        tasks: n,
        wall,
        serial: None,
    });

    // 2. Primes by trial division, 128 ranges.
    let (lo, hi) = if quick {
        (10_000_000, 10_050_000)
    } else {
        (10_000_000, 24_000_000)
    };
    let t = Instant::now();
    let expect = primes::count_primes(lo, hi);
    let serial = t.elapsed();
    let ranges = split_range(lo, hi, 128);
    let (wall, ids) = timed_phase(
        &app,
        "primes",
        ranges.iter().map(|r| call("lovage.primes", r)).collect(),
    )?;
    verify("primes", expect, sum_results(&app, &ids)?)?;
    phases.push(DemoPhase {
        name: "primes",
        what: format!("{expect} primes in [{lo}, {hi})"),
        tasks: ranges.len(),
        wall,
        serial: Some(serial),
    });

    // 3. Monte Carlo π, 64 independent streams.
    let per = if quick { 20_000 } else { 16_000_000 };
    let t = Instant::now();
    let expect: u64 = (0..64).map(|seed| pi::pi_hits(seed, per)).sum();
    let serial = t.elapsed();
    let (wall, ids) = timed_phase(
        &app,
        "pi",
        (0..64u64)
            .map(|seed| call("lovage.pi", &(seed, per)))
            .collect(),
    )?;
    verify("pi", expect, sum_results(&app, &ids)?)?;
    phases.push(DemoPhase {
        name: "pi",
        what: format!(
            "π ≈ {:.6} from {} samples",
            pi::estimate(expect, 64 * per),
            64 * per
        ),
        tasks: 64,
        wall,
        serial: Some(serial),
    });

    // 4. Naive fib, many calls.
    let (nfib, calls) = if quick { (20u32, 8usize) } else { (35, 64) };
    let t = Instant::now();
    let expect: u64 = (0..calls)
        .map(|_| fib::fib(std::hint::black_box(nfib)))
        .sum();
    let serial = t.elapsed();
    let (wall, ids) = timed_phase(
        &app,
        "fib",
        (0..calls).map(|_| call("lovage.fib", &[nfib])).collect(),
    )?;
    verify("fib", expect, sum_results(&app, &ids)?)?;
    phases.push(DemoPhase {
        name: "fib",
        what: format!("fib({nfib}) x {calls}"),
        tasks: calls,
        wall,
        serial: Some(serial),
    });

    workers.stop();

    out.demo(&DemoReport {
        broker: url,
        pids,
        phases,
    });
    Ok(())
}

/// Sends, waits, and fails if any task failed.
fn timed_phase(
    app: &App,
    label: &str,
    calls: Vec<Signature>,
) -> anyhow::Result<(Duration, Vec<TaskId>)> {
    let (took, ids, failures) = send_and_wait(app, label, calls)?;
    check(&failures)?;
    Ok((took, ids))
}

fn check(failures: &[String]) -> anyhow::Result<()> {
    if let Some(first) = failures.first() {
        anyhow::bail!("{} task(s) failed, e.g. {first}", failures.len());
    }
    Ok(())
}

fn verify(name: &str, expect: u64, got: u64) -> anyhow::Result<()> {
    if expect != got {
        anyhow::bail!("{name}: the queue computed {got}, serial computed {expect}");
    }
    Ok(())
}

/// `lovage demo --frames`: the e-commerce mini project on a thread pool, then on worker
/// processes through an embedded SQLite broker (over Parquet files), each step timed.
#[cfg(feature = "frames")]
fn frames(a: &DemoArgs) -> Result<(), Exit> {
    use lovage::frame::ecommerce::{run, run_on_files, Report, Sizes};
    use lovage::graph::{Broker, Threads};
    let sizes = if a.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let pool = lovage::ThreadPool::new(a.workers.max(1));
    let on_threads = run(Threads(&pool), &sizes).context("the mini project on threads")?;
    let svg = std::env::temp_dir().join("lovage-demo-sales-by-category.svg");
    std::fs::write(&svg, &on_threads.svg).context("writing the bar chart")?;
    if !a.json {
        println!("on a thread pool of {} threads:", a.workers.max(1));
        println!("{on_threads}");
        println!("bar chart: {}", svg.display());
    }

    let dir = tempfile::Builder::new()
        .prefix("lovage-demo-frames-")
        .tempdir()
        .context("creating a temporary directory")?;
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let app = App::connect(&url).context("opening the demo broker")?;
    let mut workers = WorkerProcesses::start(a.workers, &url, &["--concurrency", "1"])?;
    workers.wait_registered(&app, a.workers, Duration::from_secs(30))?;
    let client = app.client().context("a client of the demo broker")?;
    let on_workers = run_on_files(
        Threads(&pool),
        Broker(&client),
        &sizes,
        &dir.path().join("sales"),
    )
    .context("the mini project on the workers")?;
    workers.stop();
    // The same rows in other partitions: sums of floats in another order, so equal within
    // rounding.
    let same = on_workers.by_category.len() == on_threads.by_category.len()
        && on_workers
            .by_category
            .iter()
            .zip(&on_threads.by_category)
            .all(|((a, x), (b, y))| a == b && (x - y).abs() <= 1e-9 * x.abs().max(y.abs()));
    if !same {
        return Err(anyhow::anyhow!(
            "sales by category differ: {:?} on threads, {:?} on the workers",
            on_threads.by_category,
            on_workers.by_category
        )
        .into());
    }
    if a.json {
        let steps = |r: &Report| -> Vec<serde_json::Value> {
            r.steps
                .iter()
                .map(|s| serde_json::json!({"step": s.name, "s": s.took.as_secs_f64(), "result": s.result}))
                .collect()
        };
        let doc = serde_json::json!({
            "rows": sizes.rows,
            "steps": steps(&on_threads),
            "on_workers": {"broker": url, "workers": a.workers, "steps": steps(&on_workers)},
            "svg": svg,
        });
        println!("{doc}");
    } else {
        println!(
            "\non {} worker processes through {url} (the rows as Parquet files):",
            a.workers
        );
        println!("{on_workers}");
    }
    Ok(())
}
