//! Helpers shared by the frame tests: schedulers, random data, random partitionings and a
//! comparison against one-partition Polars.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of the helpers

use std::sync::OnceLock;

use lovage_frame::polars::prelude::*;
use lovage_graph::{Inline, Scheduler, Threads};
use lovage_pool::ThreadPool;

pub fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

pub fn schedulers() -> [Scheduler<'static>; 2] {
    [Inline, Threads(pool())]
}

/// Relative tolerance for float results (sums of floats are added in another order).
pub const TOL: f64 = 1e-9;

/// A frame of `n` rows: `k` (i64 key in 0..groups, every 7th null), `s` (string key),
/// `x` (i64 with every 5th null) and `y` (f64).
pub fn data(n: usize, groups: i64, seed: u64) -> DataFrame {
    let mut rng = fastrand::Rng::with_seed(seed);
    let k: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 7 != 3).then(|| rng.i64(0..groups.max(1))))
        .collect();
    let s: Vec<String> = (0..n).map(|_| format!("c{}", rng.u8(0..3))).collect();
    let x: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 5 != 1).then(|| rng.i64(-1000..1000)))
        .collect();
    let y: Vec<f64> = (0..n).map(|_| rng.f64() * 100.0 - 20.0).collect();
    df!("k" => k, "s" => s, "x" => x, "y" => y).unwrap()
}

/// Cuts `df` at the given points (sorted; repeated points give empty partitions).
pub fn cut(df: &DataFrame, mut points: Vec<usize>) -> Vec<DataFrame> {
    points.iter_mut().for_each(|p| *p %= df.height() + 1);
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(df.slice(at as i64, p - at));
        at = p;
    }
    out.push(df.slice(at as i64, df.height() - at));
    out
}

/// Asserts that two frames hold the same rows once sorted by `keys` (all columns when
/// empty): exact for everything but floats, which agree within `TOL`.
pub fn assert_same(got: &DataFrame, want: &DataFrame, keys: &[&str]) {
    assert_eq!(
        got.height(),
        want.height(),
        "heights differ:\n{got}\n{want}"
    );
    let names: Vec<PlSmallStr> = want.get_column_names().into_iter().cloned().collect();
    let sort_by: Vec<PlSmallStr> = if keys.is_empty() {
        names.clone()
    } else {
        keys.iter().map(|k| PlSmallStr::from(*k)).collect()
    };
    let opts = SortMultipleOptions::default()
        .with_nulls_last(true)
        .with_maintain_order(true);
    let got = got.sort(sort_by.clone(), opts.clone()).unwrap();
    let want = want.sort(sort_by, opts).unwrap();
    for name in &names {
        let (a, b) = (got.column(name).unwrap(), want.column(name).unwrap());
        assert_eq!(a.dtype(), b.dtype(), "column {name}: types differ");
        if matches!(b.dtype(), DataType::Float64 | DataType::Float32) {
            let (a, b) = (
                a.cast(&DataType::Float64).unwrap(),
                b.cast(&DataType::Float64).unwrap(),
            );
            for (i, (u, v)) in a
                .f64()
                .unwrap()
                .iter()
                .zip(b.f64().unwrap().iter())
                .enumerate()
            {
                match (u, v) {
                    (Some(u), Some(v)) if u.is_nan() && v.is_nan() => {}
                    (Some(u), Some(v)) => assert!(
                        (u - v).abs() <= TOL * v.abs().max(1.0),
                        "column {name} row {i}: {u} against {v}"
                    ),
                    (u, v) => assert_eq!(u, v, "column {name} row {i}"),
                }
            }
        } else {
            assert!(
                a.as_materialized_series()
                    .equals_missing(b.as_materialized_series()),
                "column {name}:\n{a:?}\n{b:?}"
            );
        }
    }
}

/// The interval `agg::quantile` / `Frame::quantiles` promise for quantile `q` of `sorted`
/// (finite values, ascending): between the values of ranks `q ∓ QUANTILE_RANK_ERROR`, widened
/// to the next distinct value on each side (a t-digest interpolates between neighbouring
/// centroids, which on tied values lands between two values).
pub fn rank_interval(sorted: &[f64], q: f64) -> (f64, f64) {
    let tol = lovage_frame::QUANTILE_RANK_ERROR;
    let last = (sorted.len() - 1) as f64;
    let lo = sorted[((q - tol).max(0.0) * last).floor() as usize];
    let hi = sorted[((q + tol).min(1.0) * last).ceil() as usize];
    let lo = sorted
        .iter()
        .rev()
        .find(|v| **v < lo)
        .copied()
        .unwrap_or(lo);
    let hi = sorted.iter().find(|v| **v > hi).copied().unwrap_or(hi);
    (lo, hi)
}

/// Asserts that `got` (a group-by by `keys`, or a reduction when there are none) holds, in
/// each column `name` of `quantiles` (`(name, q)`), an estimate of quantile `q` of `column`
/// within the stated rank error of the group's values in `rows`, one-partition Polars'
/// answer on the same rows: Polars' own `quantile` (linear and nearest interpolation) must
/// lie in the same interval, and a group with no value is null in both. The groups must be
/// Polars' groups.
pub fn assert_quantiles(
    got: &DataFrame,
    rows: &DataFrame,
    keys: &[&str],
    column: &str,
    quantiles: &[(&str, f64)],
) {
    let v = || col(column).cast(DataType::Float64);
    let mut exprs = vec![v().drop_nulls().alias("__sorted")];
    for (i, (_, q)) in quantiles.iter().enumerate() {
        exprs.push(
            v().quantile(lit(*q), QuantileMethod::Linear)
                .alias(format!("__linear{i}")),
        );
        exprs.push(
            v().quantile(lit(*q), QuantileMethod::Nearest)
                .alias(format!("__nearest{i}")),
        );
    }
    let lf = rows.clone().lazy();
    let want = if keys.is_empty() {
        let imploded = exprs.remove(0).implode(false);
        exprs.insert(0, imploded);
        lf.select(exprs)
    } else {
        lf.group_by(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
            .agg(exprs)
    };
    let want = want.collect().unwrap();
    assert_eq!(got.height(), want.height(), "groups differ:\n{got}\n{want}");
    let opts = SortMultipleOptions::default()
        .with_nulls_last(true)
        .with_maintain_order(true);
    let (got, want) = if keys.is_empty() {
        (got.clone(), want)
    } else {
        (
            got.sort(keys.to_vec(), opts.clone()).unwrap(),
            want.sort(keys.to_vec(), opts).unwrap(),
        )
    };
    for k in keys {
        let (a, b) = (got.column(k).unwrap(), want.column(k).unwrap());
        assert!(
            a.as_materialized_series()
                .equals_missing(b.as_materialized_series()),
            "keys {k} differ"
        );
    }
    let sorted = want.column("__sorted").unwrap().list().unwrap().clone();
    for (i, (name, q)) in quantiles.iter().enumerate() {
        let est = got.column(name).unwrap();
        assert_eq!(est.dtype(), &DataType::Float64, "{name}: f64");
        let est = est.f64().unwrap();
        let f = |c: String| want.column(&c).unwrap().f64().unwrap().clone();
        let (linear, nearest) = (f(format!("__linear{i}")), f(format!("__nearest{i}")));
        for (row, values) in sorted.amortized_iter().enumerate() {
            let mut values: Vec<f64> = values
                .map(|s| s.as_ref().f64().unwrap().iter().flatten().collect())
                .unwrap_or_default();
            values.sort_by(f64::total_cmp);
            let (e, l, n) = (est.get(row), linear.get(row), nearest.get(row));
            if values.is_empty() {
                assert_eq!((e, l, n), (None, None, None), "{name} row {row}: no values");
                continue;
            }
            let (lo, hi) = rank_interval(&values, *q);
            let (e, l, n) = (e.unwrap(), l.unwrap(), n.unwrap());
            assert!(
                lo <= l && l <= hi && lo <= n && n <= hi,
                "{name} row {row}: Polars {l} / {n} outside {lo}..={hi}: {values:?}"
            );
            assert!(
                lo <= e && e <= hi,
                "{name} (q {q}) row {row}: estimate {e} outside {lo}..={hi} (Polars {l}, {n}; {} values)",
                values.len()
            );
        }
    }
}

/// `parts` CSV files of `rows` rows of `data` each in `dir`, read as a frame: one partition
/// per file (a frame of files, so every scheduler runs it with registered tasks).
pub fn csv_files<'g>(
    g: &'g lovage_graph::Graph,
    dir: &tempfile::TempDir,
    parts: u64,
    rows: usize,
) -> lovage_frame::Frame<'g> {
    for i in 0..parts {
        let mut df = data(rows, 50, i);
        let path = dir.path().join(format!("{i:02}.csv"));
        CsvWriter::new(std::fs::File::create(path).unwrap())
            .finish(&mut df)
            .unwrap();
    }
    let pattern = format!("{}/*.csv", dir.path().display());
    lovage_frame::read_csv(g, &pattern, lovage_frame::CsvOptions::default()).unwrap()
}

/// A worker in this process on `backend` (two threads), keeping every value of 1 KiB or more
/// in its store (in `dir`): the process's counters see every read and fetch.
pub struct KeepingWorker {
    stop: lovage_worker::Shutdown,
    running: std::thread::JoinHandle<std::io::Result<lovage_worker::WorkerReport>>,
}

impl KeepingWorker {
    pub fn start(backend: lovage_broker::Backend, dir: &tempfile::TempDir) -> KeepingWorker {
        let config = lovage_worker::WorkerConfig {
            pool: lovage_worker::PoolKind::Threads,
            concurrency: 2,
            poll: std::time::Duration::from_millis(20),
            data: Some(lovage_worker::DataConfig {
                threshold: 1 << 10,
                dir: Some(dir.path().to_owned()),
                ..lovage_worker::DataConfig::default()
            }),
            ..lovage_worker::WorkerConfig::default()
        };
        let worker = lovage_worker::Worker::new(backend, config).unwrap();
        let stop = worker.shutdown_handle();
        let running = std::thread::spawn(move || worker.run());
        KeepingWorker { stop, running }
    }

    /// Stops it once its tasks are done.
    pub fn stop(self) {
        self.stop.graceful();
        self.running.join().unwrap().unwrap();
    }
}
