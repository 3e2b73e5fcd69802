//! `lovage bench frames --spill`: a group-by over a Parquet dataset several times the workers'
//! memory limit, on two `lovage worker` processes with `--data-plane --memory-limit` on the
//! embedded SQLite broker, with few groups (a tree of partials) and with many (a hash exchange,
//! `split_out`). Each answer is checked against sums counted while the data was written
//! (integers: exact); each worker's peak resident memory (`VmHWM`) is reported against the
//! limit plus 25%, with the bytes its store spilled to files. Fresh workers per workload, so
//! each peak is that workload's. The dataset and the workers' files are removed at the end.
//!
//! "Dataset size" is the decoded size of its columns (three 8-byte columns: 24 bytes a row),
//! what Polars holds in memory; the files on disk are smaller.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lovage::frame::polars::prelude::*;
use lovage::frame::{agg, read_parquet};
use lovage::graph::{Broker, Graph};
use lovage_broker::ops::{broadcast, ControlRequest};
use serde_json::{json, Value};

use super::output::{self, BenchReport, Table};
use super::procs::{bench_broker, WorkerProcesses};

/// The spill workload's settings (`lovage bench frames --spill ...`).
#[derive(Debug, Clone, clap::Args)]
pub struct SpillArgs {
    /// Run the spill benchmark instead of the others: a group-by over a Parquet dataset
    /// `--spill-factor` times the workers' `--spill-limit`.
    #[arg(long)]
    pub spill: bool,
    /// With --spill: each worker's `--memory-limit` (K, M, G suffixes: KiB…).
    #[arg(long, default_value = "256M", value_parser = super::worker::parse_bytes)]
    pub spill_limit: usize,
    /// With --spill: the dataset's decoded size as a multiple of the limit.
    #[arg(long, default_value_t = 4)]
    pub spill_factor: usize,
    /// With --spill: rows per Parquet row group (a partition each).
    #[arg(long, default_value_t = 1_000_000)]
    pub spill_row_group: usize,
    /// With --spill: distinct keys of the many-groups workload.
    #[arg(long, default_value_t = 1_000_000)]
    pub spill_groups: i64,
    /// With --spill: output partitions of the many-groups exchange.
    #[arg(long, default_value_t = 64)]
    pub spill_split_out: usize,
    /// With --spill: where the dataset is written (a directory of its own is made inside and
    /// removed at the end); default: the temporary directory.
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// With --spill: the `lovage` executable the workers run (another build, to compare);
    /// default: this one.
    #[arg(long)]
    pub spill_worker_exe: Option<PathBuf>,
}

/// Bytes a row takes decoded: `few` and `many` (i64) and `v` (i64).
const ROW_BYTES: usize = 24;
/// Distinct keys of the few-groups workload.
const FEW: i64 = 10;
/// Rows per file written.
const FILE_ROWS: usize = 4_000_000;

/// What the written rows sum to, per key: the exact answers.
struct Expected {
    few: Vec<(i64, u64)>,
    many: Vec<(i64, u64)>,
}

/// Writes the dataset into `dir`: files of `FILE_ROWS` rows in row groups of `row_group`,
/// `rows` in all; keys `few` (0..10) and `many` (0..groups), values `v` (0..1000).
fn write_dataset(
    dir: &Path,
    rows: usize,
    row_group: usize,
    groups: i64,
    bar: &ProgressBar,
) -> anyhow::Result<Expected> {
    let mut few = vec![(0i64, 0u64); FEW as usize];
    let mut many = vec![(0i64, 0u64); groups as usize];
    let files = rows.div_ceil(FILE_ROWS);
    for f in 0..files {
        bar.set_message(format!("writing the dataset: file {} of {files}", f + 1));
        let n = FILE_ROWS.min(rows - f * FILE_ROWS);
        let mut rng = fastrand::Rng::with_seed(f as u64);
        let mut k_few = Vec::with_capacity(n);
        let mut k_many = Vec::with_capacity(n);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b, x) = (rng.i64(0..FEW), rng.i64(0..groups), rng.i64(0..1000));
            for e in [&mut few[a as usize], &mut many[b as usize]] {
                e.0 += x;
                e.1 += 1;
            }
            k_few.push(a);
            k_many.push(b);
            v.push(x);
        }
        let mut df = df!("few" => k_few, "many" => k_many, "v" => v)?;
        let path = dir.join(format!("part-{f:04}.parquet"));
        let out =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let written = ParquetWriter::new(out)
            .with_row_group_size(Some(row_group))
            .finish(&mut df);
        anyhow::Context::with_context(written, || format!("writing {}", path.display()))?;
    }
    Ok(Expected { few, many })
}

/// Checks a group-by's answer (`key`, `v` summed, `len`) against the counted sums.
fn check(got: &DataFrame, key: &str, want: &[(i64, u64)]) -> anyhow::Result<()> {
    let nonempty = want.iter().filter(|(_, n)| *n > 0).count();
    anyhow::ensure!(
        got.height() == nonempty,
        "{key}: {} groups, want {nonempty}",
        got.height()
    );
    let column = |name: &str| -> anyhow::Result<Series> {
        Ok(got
            .column(name)?
            .as_materialized_series()
            .cast(&DataType::Int64)?)
    };
    let (k, s, n) = (column(key)?, column("v")?, column("len")?);
    let (k, s, n) = (k.i64()?, s.i64()?, n.i64()?);
    for i in 0..got.height() {
        let (Some(k), Some(s), Some(n)) = (k.get(i), s.get(i), n.get(i)) else {
            anyhow::bail!("{key}: a null in row {i}");
        };
        let w = want
            .get(usize::try_from(k).unwrap_or(usize::MAX))
            .with_context(|| format!("{key}: a key {k} never written"))?;
        anyhow::ensure!(
            (s, n as u64) == *w,
            "{key} = {k}: sum {s}, count {n}; want {w:?}"
        );
    }
    Ok(())
}

/// A process's peak resident memory in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Each worker's data store figures (the `stats` control command), by worker id.
fn store_stats(app: &lovage::App) -> anyhow::Result<Vec<(String, Value)>> {
    let request = ControlRequest::new("stats", json!({}), "lovage bench frames --spill");
    let gathered = broadcast(app.backend(), &[], &request, Duration::from_secs(5), false)?;
    Ok(gathered
        .replies
        .into_iter()
        .map(|(w, r)| (w, r["ok"]["data"].clone()))
        .collect())
}

/// One workload's figures.
struct Run {
    secs: f64,
    /// Per worker: (its peak KiB, bytes it spilled if its build says).
    workers: Vec<(u64, Option<u64>)>,
}

/// Runs `make`'s group-by on two fresh workers; checks it with `check`.
fn run_once(
    url: &str,
    app: &lovage::App,
    a: &SpillArgs,
    pattern: &str,
    data_dir: &Path,
    make: &dyn Fn(&lovage::frame::Frame<'_>) -> anyhow::Result<Delayed<DataFrame>>,
    check: &dyn Fn(&DataFrame) -> anyhow::Result<()>,
) -> anyhow::Result<Run> {
    let limit = a.spill_limit.to_string();
    let dir = data_dir.display().to_string();
    let exe = match &a.spill_worker_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the lovage executable")?,
    };
    let mut workers = WorkerProcesses::start_exe(
        &exe,
        2,
        url,
        &[
            "--concurrency",
            "2",
            "--data-plane",
            "--memory-limit",
            &limit,
            "--data-dir",
            &dir,
        ],
    )?;
    workers.wait_registered(app, 2, Duration::from_secs(30))?;
    let client = app.client().context("starting the futures client")?;
    let g = Graph::new();
    let f = read_parquet(&g, pattern)?;
    let out = make(&f)?;
    let t0 = Instant::now();
    let got = lovage::frame::compute(&g, Broker(&client), out)?;
    let secs = t0.elapsed().as_secs_f64();
    check(&got)?;
    let stats = store_stats(app)?;
    let pids = workers.pids();
    let mut figures = Vec::new();
    for pid in &pids {
        let peak = peak_kib(*pid).context("reading a worker's VmHWM")?;
        // Workers are named w1, w2 by `WorkerProcesses` (their id is name@host.pid).
        // None from a build whose `stats` has no store figures (`--spill-worker-exe`).
        let spilled = stats
            .iter()
            .find(|(w, _)| w.ends_with(&format!(".{pid}")))
            .and_then(|(_, s)| s["spilled_bytes"].as_u64());
        figures.push((peak, spilled));
    }
    workers.stop();
    Ok(Run {
        secs,
        workers: figures,
    })
}

/// A frame's handle type, for the workloads' closures.
type Delayed<T> = lovage::graph::Delayed<T>;

pub fn run(a: &SpillArgs, runs: usize, json_out: bool) -> anyhow::Result<()> {
    let limit = a.spill_limit;
    anyhow::ensure!(limit > 0, "--spill-limit must be more than 0");
    let rows = (limit * a.spill_factor.max(1)).div_ceil(ROW_BYTES);
    let base = a.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("lovage-bench-spill-")
        .tempdir_in(&base)
        .with_context(|| format!("a directory in {}", base.display()))?;
    let data = dir.path().join("data");
    let spill = dir.path().join("spill");
    std::fs::create_dir_all(&data)?;

    let bar = ProgressBar::new(1 + 2 * runs as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let want = write_dataset(&data, rows, a.spill_row_group, a.spill_groups, &bar)?;
    bar.inc(1);
    let on_disk: u64 = std::fs::read_dir(&data)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let pattern = data.join("*.parquet").display().to_string();
    let broker = bench_broker(None)?;

    let few = |f: &lovage::frame::Frame<'_>| -> anyhow::Result<Delayed<DataFrame>> {
        Ok(f.group_by(["few"]).agg([agg::sum("v"), agg::len()])?)
    };
    let many = |f: &lovage::frame::Frame<'_>| -> anyhow::Result<Delayed<DataFrame>> {
        Ok(f.group_by(["many"])
            .split_out(a.spill_split_out)
            .agg([agg::sum("v"), agg::len()])?)
    };
    let check_few = |df: &DataFrame| check(df, "few", &want.few);
    let check_many = |df: &DataFrame| check(df, "many", &want.many);
    type Make<'a> = &'a dyn Fn(&lovage::frame::Frame<'_>) -> anyhow::Result<Delayed<DataFrame>>;
    type Check<'a> = &'a dyn Fn(&DataFrame) -> anyhow::Result<()>;
    let workloads: [(String, &str, Make<'_>, Check<'_>); 2] = [
        (
            format!("{FEW} groups (a tree of partials)"),
            "few",
            &few,
            &check_few,
        ),
        (
            format!(
                "{} groups (hash exchange, split_out {})",
                a.spill_groups, a.spill_split_out
            ),
            "many",
            &many,
            &check_many,
        ),
    ];
    let mut results: Vec<Vec<Run>> = vec![Vec::new(), Vec::new()];
    for r in 0..runs {
        for (i, (name, _, make, check)) in workloads.iter().enumerate() {
            bar.set_message(format!("run {} of {runs}: {name}", r + 1));
            results[i].push(run_once(
                &broker.url,
                &broker.app,
                a,
                &pattern,
                &spill,
                *make,
                *check,
            )?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(broker);
    // The dataset and the workers' spill directories (they remove their own on a graceful
    // stop; the rest goes here).
    dir.close().context("removing the benchmark's files")?;

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let bound_kib = (limit as u64 + limit as u64 / 4) / 1024;
    let mut t = Table::new(&[
        ("workload", false),
        ("wall time", true),
        ("peak RSS per worker (MiB)", true),
        ("within limit + 25%", false),
        ("spilled per worker (MiB)", true),
    ]);
    let mut figures = serde_json::Map::new();
    for ((name, key, _, _), runs_of) in workloads.iter().zip(&results) {
        let mut secs: Vec<f64> = runs_of.iter().map(|r| r.secs).collect();
        secs.sort_by(|x, y| x.total_cmp(y));
        let median = secs[secs.len() / 2];
        let peaks: Vec<u64> = runs_of
            .iter()
            .flat_map(|r| r.workers.iter().map(|w| w.0))
            .collect();
        let worst = peaks.iter().copied().max().unwrap_or(0);
        let within = worst <= bound_kib;
        let spilled: Vec<Option<u64>> = runs_of
            .iter()
            .flat_map(|r| r.workers.iter().map(|w| w.1))
            .collect();
        t.row(vec![
            name.clone(),
            format!("{median:.2} s ({:.2}–{:.2})", secs[0], secs[secs.len() - 1]),
            peaks
                .iter()
                .map(|k| format!("{:.0}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
            format!(
                "{} (worst {:.0} of {:.0} MiB)",
                if within { "yes" } else { "NO" },
                worst as f64 / 1024.0,
                bound_kib as f64 / 1024.0
            ),
            spilled
                .iter()
                .map(|b| b.map_or("?".into(), |b| format!("{:.0}", mib(b))))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
        figures.insert(format!("{key}_s"), json!(median));
        figures.insert(
            format!("{key}_s_range"),
            json!([secs[0], secs[secs.len() - 1]]),
        );
        figures.insert(format!("{key}_peak_rss_kib"), json!(peaks));
        figures.insert(format!("{key}_within_limit_plus_25"), json!(within));
        figures.insert(format!("{key}_spilled_bytes"), json!(spilled));
    }
    figures.insert("memory_limit".into(), json!(limit));
    figures.insert("rows".into(), json!(rows));
    figures.insert("decoded_bytes".into(), json!(rows * ROW_BYTES));
    figures.insert("parquet_bytes".into(), json!(on_disk));
    figures.insert("runs".into(), json!(runs));
    output::select(json_out).bench(&BenchReport {
        title: format!(
            "lovage bench frames --spill: two workers with --memory-limit {:.0} MiB on SQLite, \
             {rows} rows ({:.0} MiB decoded, {:.0} MiB of Parquet) in row groups of {}; \
             median (min–max) of {runs} runs",
            mib(limit as u64),
            mib((rows * ROW_BYTES) as u64),
            mib(on_disk),
            a.spill_row_group
        ),
        tables: vec![t],
        spaced: false,
        figures: Value::Object(figures),
    });
    Ok(())
}
