//! Frames against one-partition Polars on the same data, on the inline and thread-pool
//! schedulers: random partitionings (empty partitions included), nulls in keys and values,
//! one group and many groups. Integer sums and counts must match exactly; float results
//! (means, std, var) within a relative 1e-9.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic to fail

use std::sync::OnceLock;

use lovage_frame::polars::prelude::*;
use lovage_frame::{agg, compute, Agg, Frame};
use lovage_graph::{Graph, Inline, Scheduler, Threads};
use lovage_pool::ThreadPool;
use proptest::prelude::*;

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

fn schedulers() -> [Scheduler<'static>; 2] {
    [Inline, Threads(pool())]
}

/// Relative tolerance for float results (sums of floats are added in another order).
const TOL: f64 = 1e-9;

/// A frame of `n` rows: `k` (i64 key in 0..groups, every 7th null), `s` (string key),
/// `x` (i64 with every 5th null) and `y` (f64).
fn data(n: usize, groups: i64, seed: u64) -> DataFrame {
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
fn cut(df: &DataFrame, mut points: Vec<usize>) -> Vec<DataFrame> {
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
fn assert_same(got: &DataFrame, want: &DataFrame, keys: &[&str]) {
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

fn all_aggs() -> Vec<Agg> {
    vec![
        agg::sum("x"),
        agg::mean("x").alias("x_mean"),
        agg::min("x").alias("x_min"),
        agg::max("x").alias("x_max"),
        agg::count("x").alias("x_count"),
        agg::std("y"),
        agg::var("y").alias("y_var"),
        agg::sum("y").alias("y_sum"),
        agg::min("s").alias("s_min"),
        agg::len(),
    ]
}

/// The same aggregations in Polars on one frame.
fn polars_aggs() -> Vec<Expr> {
    vec![
        col("x").sum(),
        col("x").mean().alias("x_mean"),
        col("x").min().alias("x_min"),
        col("x").max().alias("x_max"),
        col("x").count().cast(DataType::Int64).alias("x_count"),
        col("y").std(1),
        col("y").var(1).alias("y_var"),
        col("y").sum().alias("y_sum"),
        col("s").min().alias("s_min"),
        len().cast(DataType::Int64).alias("len"),
    ]
}

fn polars_group_by(df: &DataFrame, keys: &[&str]) -> DataFrame {
    let keys: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    df.clone()
        .lazy()
        .group_by(keys)
        .agg(polars_aggs())
        .collect()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn group_by_matches_polars_on_any_partitioning(
        n in 0usize..300,
        groups in 1i64..40,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..400, 0..8),
        split_every in 2usize..5,
        split_out in 1usize..4,
    ) {
        let df = data(n, groups, seed);
        let want = polars_group_by(&df, &["k"]);
        for sched in schedulers() {
            let g = Graph::new();
            let f = Frame::from_partitions(&g, cut(&df, points.clone())).unwrap();
            let out = f.group_by(["k"]).split_every(split_every).split_out(split_out).agg(all_aggs()).unwrap();
            let got = compute(&g, sched, out).unwrap();
            assert_same(&got, &want, &["k"]);
        }
    }

    #[test]
    fn reductions_match_polars_on_any_partitioning(
        n in 0usize..300,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let df = data(n, 5, seed);
        let want = df.clone().lazy().select(polars_aggs()).collect().unwrap();
        let g = Graph::new();
        let f = Frame::from_partitions(&g, cut(&df, points)).unwrap();
        let got = compute(&g, Threads(pool()), f.reduce(all_aggs()).unwrap()).unwrap();
        assert_same(&got, &want, &[]);
    }
}

#[test]
fn two_keys_with_nulls_one_group_and_many_groups() {
    let df = data(5000, 3, 7);
    let g = Graph::new();
    let f = Frame::from_polars(&g, df.clone(), 9).unwrap();
    let two = f.group_by(["k", "s"]).agg(all_aggs()).unwrap();
    let got = compute(&g, Inline, two).unwrap();
    assert_same(&got, &polars_group_by(&df, &["k", "s"]), &["k", "s"]);

    // One group: every key the same.
    let one = df
        .clone()
        .lazy()
        .with_column(lit(1i64).alias("k"))
        .collect()
        .unwrap();
    let g = Graph::new();
    let f = Frame::from_polars(&g, one.clone(), 6).unwrap();
    let got = compute(
        &g,
        Threads(pool()),
        f.group_by(["k"]).agg(all_aggs()).unwrap(),
    )
    .unwrap();
    assert_eq!(got.height(), 1);
    assert_same(&got, &polars_group_by(&one, &["k"]), &["k"]);

    // Many groups: nearly every row its own group, tree and hash split alike.
    let many = data(60_000, 50_000, 11);
    let want = polars_group_by(&many, &["k"]);
    for split_out in [1, 4] {
        let g = Graph::new();
        let f = Frame::from_polars(&g, many.clone(), 12).unwrap();
        let out = f
            .group_by(["k"])
            .split_out(split_out)
            .agg(all_aggs())
            .unwrap();
        let got = compute(&g, Threads(pool()), out).unwrap();
        assert_same(&got, &want, &["k"]);
    }
}

#[test]
fn steps_len_head_and_collect() {
    let df = data(1000, 10, 3);
    let g = Graph::new();
    let f = Frame::from_polars(&g, df.clone(), 7).unwrap();
    let f2 = f
        .with_columns([(col("x") * col("y")).alias("xy")])
        .unwrap()
        .filter(col("y").gt(lit(10.0)))
        .unwrap()
        .select([col("k"), col("xy")])
        .unwrap();
    let want = df
        .clone()
        .lazy()
        .with_columns([(col("x") * col("y")).alias("xy")])
        .filter(col("y").gt(lit(10.0)))
        .select([col("k"), col("xy")])
        .collect()
        .unwrap();
    let (all, n, n_all, head) =
        compute(&g, Inline, (f2.collect(), f2.len(), f.len(), f2.head(5))).unwrap();
    assert_eq!(all, want);
    assert_eq!(n, want.height());
    assert_eq!(n_all, 1000);
    assert_eq!(head, want.head(Some(5)));
    // `len` from the heights needs no partition run; a select of an aggregate is not a row
    // count kept, so it is counted.
    let g = Graph::new();
    let f = Frame::from_polars(&g, df.clone(), 7).unwrap();
    let renamed = f.select([col("x").alias("z")]).unwrap();
    let summed = f.select([col("x").sum().alias("z")]).unwrap();
    let (n_renamed, n_summed) = compute(&g, Inline, (renamed.len(), summed.len())).unwrap();
    assert_eq!((n_renamed, n_summed), (1000, 7), "one sum per partition");
    // A missing column is an error when the step is added, naming the column.
    let err = f.select([col("nope")]).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn nlargest_value_counts_drop_duplicates_describe_n_unique() {
    let df = data(2000, 20, 5);
    let g = Graph::new();
    let f = Frame::from_polars(&g, df.clone(), 6).unwrap();
    let outs = (
        f.nlargest(5, "y").unwrap(),
        f.nsmallest(3, "x").unwrap(),
        f.value_counts("k").unwrap(),
        f.drop_duplicates(Some(vec!["k".into(), "s".into()]))
            .unwrap(),
        f.describe().unwrap(),
        f.n_unique("k").unwrap(),
    );
    let (top, bottom, counts, uniq, desc, nu) = compute(&g, Threads(pool()), outs).unwrap();
    let desc_sort = |c: &str, d: bool| {
        df.sort(
            [c],
            SortMultipleOptions::default()
                .with_order_descending(d)
                .with_nulls_last(true),
        )
        .unwrap()
    };
    assert_eq!(
        top.column("y").unwrap(),
        desc_sort("y", true).head(Some(5)).column("y").unwrap()
    );
    assert_eq!(
        bottom.column("x").unwrap(),
        desc_sort("x", false).head(Some(3)).column("x").unwrap()
    );
    let want_counts = df
        .clone()
        .lazy()
        .group_by([col("k")])
        .agg([len().cast(DataType::Int64).alias("count")])
        .collect()
        .unwrap();
    assert_same(&counts, &want_counts, &["k"]);
    let c = counts.column("count").unwrap().i64().unwrap();
    assert!(
        c.iter()
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0] >= w[1]),
        "value_counts is sorted"
    );
    let want_uniq = df
        .select(["k", "s"])
        .unwrap()
        .unique_stable(None, UniqueKeepStrategy::Any, None)
        .unwrap();
    assert_same(&uniq, &want_uniq, &["k", "s"]);
    assert_eq!(nu, df.column("k").unwrap().n_unique().unwrap());
    // describe: mean of x and max of y against Polars.
    let row = |stat: &str| {
        let i = desc
            .column("statistic")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .position(|s| s == Some(stat))
            .unwrap();
        (
            desc.column("x").unwrap().f64().unwrap().get(i).unwrap(),
            desc.column("y").unwrap().f64().unwrap().get(i).unwrap(),
        )
    };
    let x_mean = df
        .column("x")
        .unwrap()
        .as_materialized_series()
        .mean()
        .unwrap();
    assert!((row("mean").0 - x_mean).abs() < 1e-9 * x_mean.abs().max(1.0));
    let y_max: f64 = df.column("y").unwrap().f64().unwrap().max().unwrap();
    assert_eq!(row("max").1, y_max);
    assert_eq!(
        row("count").0,
        df.column("x").unwrap().len() as f64 - df.column("x").unwrap().null_count() as f64
    );
}
