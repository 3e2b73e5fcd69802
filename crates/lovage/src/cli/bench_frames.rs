//! `lovage bench frames` (only with the `frames` feature): group-by sum on generated rows with
//! few and with many groups, and the seed's e-commerce mini project, each beside
//! single-process Polars doing the same in the same run (runs alternate).

use std::time::Instant;

use anyhow::Context;
use lovage::frame::ecommerce::{self, Sizes};
use lovage::frame::polars::prelude::*;
use lovage::frame::{agg, Frame};
use lovage::graph::{Graph, Threads};
use lovage::ThreadPool;
use serde_json::json;

use super::output::{self, BenchReport, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rows of the group-by workloads.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Partitions of the group-by workloads.
    #[arg(long, default_value_t = 20)]
    partitions: usize,
    /// Rows of the mini project (the seed: 50 million).
    #[arg(long, default_value_t = 50_000_000)]
    project_rows: usize,
    /// Random numbers whose mean the mini project takes (the seed: a billion).
    #[arg(long, default_value_t = 1_000_000_000)]
    numbers: usize,
    /// Threads of lovage's pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Timed runs of each workload (the median is shown, with the range).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Small sizes (1e5 rows, 2e5 project rows, 1e7 numbers, 1 run): a smoke test.
    #[arg(long)]
    quick: bool,
    /// Untimed runs of each workload first (fresh memory costs page faults a long-lived
    /// process has paid; `bench/compare/dask_frames.py` warms Dask's side too).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Only these workloads: `groupby` (every count of `--groups`), `project` (the mini project), or
    /// `all` (to profile one alone).
    #[arg(long, value_enum, default_value_t = Workloads::All)]
    only: Workloads,
    /// The group counts of the group-by workloads, each run once in ascending order (one
    /// alone to profile it).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 1_000_000])]
    groups: Vec<i64>,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
    /// The spill benchmark (`--spill`) and its settings.
    #[command(flatten)]
    spill: super::bench_frames_spill::SpillArgs,
}

/// Which workloads `lovage bench frames` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workloads {
    All,
    Groupby,
    Project,
}

/// Median, min and max.
fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// `rows` rows of an i64 key with `groups` values and an f64 value, in `partitions` pieces.
fn keyed(rows: usize, groups: i64, partitions: usize) -> anyhow::Result<Vec<DataFrame>> {
    (0..partitions)
        .map(|i| {
            let n = rows / partitions + usize::from(i < rows % partitions);
            let mut rng = fastrand::Rng::with_seed(i as u64);
            let k: Vec<i64> = (0..n).map(|_| rng.i64(0..groups)).collect();
            let v: Vec<f64> = (0..n).map(|_| rng.f64()).collect();
            Ok(df!("k" => k, "v" => v)?)
        })
        .collect()
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    if a.spill.spill {
        return super::bench_frames_spill::run(&a.spill, a.runs.max(1), a.json);
    }
    if a.quick {
        a.rows = a.rows.min(100_000);
        a.project_rows = a.project_rows.min(200_000);
        a.numbers = a.numbers.min(10_000_000);
        a.runs = 1;
        a.warmup = 0;
    }
    let runs = a.runs.max(1);
    let pool = ThreadPool::builder()
        .workers(a.workers.max(1))
        .build()
        .context("starting the thread pool")?;
    let mut t = Table::new(&[
        ("workload", false),
        ("lovage", true),
        ("polars, one process", true),
    ]);
    let mut figures = serde_json::Map::new();
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:.3} s ({lo:.3}–{hi:.3})");

    let mut groupings: Vec<i64> = if a.only == Workloads::Project {
        Vec::new()
    } else {
        a.groups.clone()
    };
    groupings.sort_unstable();
    groupings.dedup();
    if let Some(bad) = groupings.iter().find(|&&g| g < 1) {
        anyhow::bail!("--groups: {bad} groups; each count must be at least 1");
    }
    for &groups in &groupings {
        let parts = keyed(a.rows, groups, a.partitions.max(1))?;
        let mut whole = DataFrame::empty_with_schema(parts[0].schema());
        for p in &parts {
            whole.vstack_mut(p)?;
        }
        whole.rechunk_mut();
        let (mut lov, mut pol, mut fixed) = (Vec::new(), Vec::new(), Vec::new());
        // The same exchange with every partition's partial kept (a fixed split_out never
        // skips it): what an unset split_out did before it could skip, for comparison.
        let fixed_out = a.partitions.clamp(1, 16);
        for _ in 0..a.warmup + runs {
            let g = Graph::new();
            let f = Frame::from_partitions(&g, parts.clone())?;
            let out = f
                .group_by(["k"])
                .split_out(fixed_out)
                .agg([agg::sum("v")])?;
            let t0 = Instant::now();
            let got = lovage::frame::compute(&g, Threads(&pool), out)?;
            fixed.push(t0.elapsed().as_secs_f64());
            anyhow::ensure!(got.height() as i64 <= groups, "too many groups");
            let g = Graph::new();
            let f = Frame::from_partitions(&g, parts.clone())?;
            // split_out unset: chosen from the first partial (one output for 10 groups,
            // several for 1e6).
            let out = f.group_by(["k"]).agg([agg::sum("v")])?;
            let t0 = Instant::now();
            let got = lovage::frame::compute(&g, Threads(&pool), out)?;
            lov.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let want = whole
                .clone()
                .lazy()
                .group_by([col("k")])
                .agg([col("v").sum()])
                .collect()?;
            pol.push(t0.elapsed().as_secs_f64());
            anyhow::ensure!(got.height() == want.height(), "group counts differ");
        }
        for xs in [&mut lov, &mut pol, &mut fixed] {
            xs.drain(..a.warmup);
        }
        let (l, p) = (stats(lov), stats(pol));
        t.row(vec![
            format!(
                "group-by sum, {} rows, {groups} groups, {} partitions (split_out auto)",
                a.rows, a.partitions
            ),
            fmt(l),
            format!("{}; ratio {:.2}", fmt(p), l.0 / p.0),
        ]);
        let fx = stats(fixed);
        t.row(vec![
            format!(
                "the same with split_out({fixed_out}) fixed (a partial per partition, never skipped)"
            ),
            fmt(fx),
            String::new(),
        ]);
        figures.insert(format!("groupby_{groups}_fixed_s"), json!(fx.0));
        figures.insert(format!("groupby_{groups}_s"), json!(l.0));
        figures.insert(format!("groupby_{groups}_s_range"), json!([l.1, l.2]));
        figures.insert(format!("groupby_{groups}_polars_s"), json!(p.0));
    }

    let sizes = Sizes {
        rows: a.project_rows,
        partitions: 50,
        numbers: a.numbers,
        chunk: if a.quick { 1_000_000 } else { 10_000_000 },
    };
    let mut lov_steps: Vec<(String, Vec<f64>)> = Vec::new();
    let mut pol_steps: Vec<(String, Vec<f64>)> = Vec::new();
    let project_runs = if a.only == Workloads::Groupby {
        0
    } else {
        a.warmup + runs
    };
    for r in 0..project_runs {
        let report = ecommerce::run(Threads(&pool), &sizes)?;
        let polars = ecommerce::run_polars(&sizes)?;
        if r < a.warmup {
            continue;
        }
        for (i, s) in report.steps.iter().enumerate() {
            if lov_steps.len() <= i {
                lov_steps.push((s.name.to_string(), Vec::new()));
            }
            lov_steps[i].1.push(s.took.as_secs_f64());
        }
        for (i, (name, took)) in polars.into_iter().enumerate() {
            if pol_steps.len() <= i {
                pol_steps.push((name.to_string(), Vec::new()));
            }
            pol_steps[i].1.push(took.as_secs_f64());
        }
    }
    let mut steps_json = Vec::new();
    for (name, xs) in lov_steps {
        let l = stats(xs);
        let p = pol_steps
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, xs)| stats(xs.clone()));
        t.row(vec![
            format!(
                "mini project ({} rows, 50 partitions): {name}",
                a.project_rows
            ),
            fmt(l),
            p.map_or(String::new(), |p| {
                format!("{}; ratio {:.2}", fmt(p), l.0 / p.0)
            }),
        ]);
        steps_json.push(
            json!({"step": name, "s": l.0, "s_range": [l.1, l.2], "polars_s": p.map(|p| p.0)}),
        );
    }
    figures.insert("project_rows".into(), json!(a.project_rows));
    figures.insert("project_steps".into(), json!(steps_json));
    figures.insert("rows".into(), json!(a.rows));
    figures.insert("runs".into(), json!(runs));
    figures.insert("workers".into(), json!(a.workers));
    output::select(a.json).bench(&BenchReport {
        title: format!(
            "lovage bench frames: {} threads, median (min–max) of {runs} runs; figures on a \
             shared machine are noisy",
            a.workers
        ),
        tables: vec![t],
        spaced: false,
        figures: serde_json::Value::Object(figures),
    });
    Ok(())
}
