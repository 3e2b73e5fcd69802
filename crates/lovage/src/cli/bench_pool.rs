//! `lovage bench pool`: the pools' no-op throughput beside rayon's, and the seeds' CPU
//! workloads serial vs parallel, as a table and (with `--json`) one JSON object.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lovage::builtins::noop;
use lovage::workloads::{self, Scale};
use lovage::{ProcessPool, ThreadPool};
use serde_json::{json, Map, Value};

use super::output::{self, secs, si, BenchReport, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// No-op tasks per throughput run (the process pool's per-task run uses a tenth of them).
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Workers in each pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Small sizes, a few seconds in all: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Skip the CPU workloads.
    #[arg(long)]
    no_workloads: bool,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` `runs` times (after one warm-up run) and returns the median tasks per second.
fn rate(
    runs: usize,
    n: u64,
    mut f: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<f64> {
    f()?;
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        rates.push(n as f64 / f()?.as_secs_f64());
    }
    Ok(median(rates))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

struct Figures {
    json: Map<String, Value>,
    rows: Vec<Vec<String>>,
}

impl Figures {
    fn rate(&mut self, key: &str, label: &str, value: f64) {
        self.json.insert(key.into(), json!(value.round()));
        self.rows
            .push(vec![label.into(), format!("{} tasks/s", si(value))]);
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let scale = if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let runs = args.runs.max(1);
    let n = if args.quick {
        args.tasks.min(20_000)
    } else {
        args.tasks
    };
    let n_proc = (n / 10).max(1);
    let workers = args.workers.max(1);
    let loads = if args.no_workloads {
        Vec::new()
    } else {
        workloads::all(scale)
    };

    let progress = ProgressBar::new(5 + loads.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
            .expect("valid template"),
    );
    progress.enable_steady_tick(Duration::from_millis(120));

    let mut figs = Figures {
        json: Map::new(),
        rows: Vec::new(),
    };
    let threads = ThreadPool::new(workers);
    let procs = ProcessPool::builder()
        .workers(workers)
        .build()
        .context("starting the process pool")?;

    progress.set_message("thread pool: submit + result");
    let v = rate(runs, n, || {
        let (r, d) = timed(|| {
            let handles: Vec<_> = (0..n).map(|_| threads.submit(|| black_box(()))).collect();
            handles.into_iter().try_for_each(|h| h.result())
        });
        r?;
        Ok(d)
    })?;
    figs.rate("thread_submit_per_s", "thread pool: submit + result", v);
    progress.inc(1);

    progress.set_message("thread pool: map, chunks of 1024");
    let v = rate(runs, n, || {
        let (count, d) = timed(|| {
            threads
                .map(|x: u64| black_box(x), 0..n, 1024)
                .filter(Result::is_ok)
                .count()
        });
        if count as u64 != n {
            bail!("thread map returned {count} of {n} results");
        }
        Ok(d)
    })?;
    figs.rate("thread_map_per_s", "thread pool: map (chunks of 1024)", v);
    progress.inc(1);

    progress.set_message("rayon: scope.spawn");
    match rayon_spawn_rate(runs, n, workers) {
        Some(v) => figs.rate(
            "rayon_spawn_per_s",
            "rayon (same run): scope.spawn, no result",
            v?,
        ),
        None => figs.rows.push(vec![
            "rayon (same run)".into(),
            "not built (feature rayon-compare)".into(),
        ]),
    }
    progress.inc(1);

    progress.set_message("process pool: submit + result");
    let v = rate(runs, n_proc, || {
        let (r, d) = timed(|| {
            let handles: Vec<_> = (0..n_proc).map(|_| procs.submit(noop::s())).collect();
            handles.into_iter().try_for_each(|h| h.result())
        });
        r?;
        Ok(d)
    })?;
    figs.rate("process_submit_per_s", "process pool: submit + result", v);
    progress.inc(1);

    progress.set_message("process pool: map, chunks of 1024");
    let v = rate(runs, n, || {
        let (count, d) = timed(|| {
            procs
                .map(|_| noop::s(), 0..n, 1024)
                .filter(Result::is_ok)
                .count()
        });
        if count as u64 != n {
            bail!("process map returned {count} of {n} results");
        }
        Ok(d)
    })?;
    figs.rate("process_map_per_s", "process pool: map (chunks of 1024)", v);
    progress.inc(1);

    let mut table = Table::new(&[
        ("workload", false),
        ("serial", true),
        ("threads", true),
        ("speed-up", true),
        ("processes", true),
        ("speed-up", true),
        ("what", false),
    ]);
    for w in &loads {
        progress.set_message(format!("workload {}", w.name()));
        let mut serial = Vec::new();
        let mut threaded = Vec::new();
        let mut processed = Vec::new();
        let expect = w.serial();
        for _ in 0..runs {
            let (sum, d) = timed(|| w.serial());
            check(w.name(), "serial", expect, Some(sum))?;
            serial.push(d.as_secs_f64());
            let (sum, d) = timed(|| w.threads(&threads));
            check(w.name(), "threads", expect, Some(sum))?;
            threaded.push(d.as_secs_f64());
            let (sum, d) = timed(|| w.processes(&procs));
            if sum.is_some() {
                check(w.name(), "processes", expect, sum)?;
                processed.push(d.as_secs_f64());
            }
        }
        let (s, t) = (median(serial), median(threaded));
        let name = w.name();
        figs.json.insert(format!("{name}_serial_s"), json!(s));
        figs.json.insert(format!("{name}_threads_s"), json!(t));
        figs.json
            .insert(format!("{name}_speedup"), json!(round2(s / t)));
        let (pcell, pspeed) = if processed.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            let p = median(processed);
            figs.json.insert(format!("{name}_processes_s"), json!(p));
            figs.json
                .insert(format!("{name}_process_speedup"), json!(round2(s / p)));
            (secs(p), format!("{:.2}x", s / p))
        };
        table.row(vec![
            name.into(),
            secs(s),
            secs(t),
            format!("{:.2}x", s / t),
            pcell,
            pspeed,
            w.describe(),
        ]);
        progress.inc(1);
    }
    progress.finish_and_clear();
    drop(procs);

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    figs.json.insert("workers".into(), json!(workers));
    figs.json.insert("tasks".into(), json!(n));
    figs.json.insert("runs".into(), json!(runs));
    figs.json.insert("cpus".into(), json!(cpus));

    let title = format!(
        "lovage bench pool: {workers} workers on {cpus} CPUs, {n} no-op tasks per run ({n_proc} for process submit), median of {runs}{}",
        if args.quick { " (--quick: smoke sizes, not a measurement)" } else { "" }
    );
    let mut t = Table::new(&[("no-op throughput", false), ("median", true)]);
    for r in figs.rows.drain(..) {
        t.row(r);
    }
    let mut tables = vec![t];
    if !loads.is_empty() {
        tables.push(table);
    }
    output::select(args.json).bench(&BenchReport {
        title,
        tables,
        spaced: true,
        figures: Value::Object(figs.json),
    });
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn check(name: &str, variant: &str, expect: u64, got: Option<u64>) -> anyhow::Result<()> {
    match got {
        Some(g) if g != expect => {
            bail!("workload {name}: {variant} checksum {g} differs from serial {expect}")
        }
        _ => Ok(()),
    }
}

#[cfg(feature = "rayon-compare")]
fn rayon_spawn_rate(runs: usize, n: u64, workers: usize) -> Option<anyhow::Result<f64>> {
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
        Ok(p) => p,
        Err(e) => return Some(Err(e.into())),
    };
    Some(rate(runs, n, || {
        let (_, d) = timed(|| {
            pool.scope(|s| {
                for _ in 0..n {
                    s.spawn(|_| black_box(()));
                }
            })
        });
        Ok(d)
    }))
}

#[cfg(not(feature = "rayon-compare"))]
fn rayon_spawn_rate(_runs: usize, _n: u64, _workers: usize) -> Option<anyhow::Result<f64>> {
    None
}
