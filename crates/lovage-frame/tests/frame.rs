//! Frames against one-partition Polars on the same data, on the inline and thread-pool
//! schedulers: random partitionings (empty partitions included), nulls in keys and values,
//! one group and many groups. Integer sums and counts must match exactly; float results
//! (means, std, var) within a relative 1e-9.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic to fail

use lovage_frame::polars::prelude::*;
use lovage_frame::{agg, compute, Agg, Frame, QUANTILE_RANK_ERROR};
use lovage_graph::{Graph, Inline, Threads};
use lovage_testkit::grouped_boxes;
use proptest::prelude::*;

mod common;
use common::{assert_quantiles, assert_same, csv_files, cut, data, pool, schedulers};

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
        split_out in 0usize..4,
    ) {
        let df = data(n, groups, seed);
        let want = polars_group_by(&df, &["k"]);
        for sched in schedulers() {
            let g = Graph::new();
            let f = Frame::from_partitions(&g, cut(&df, points.clone())).unwrap();
            // 0 leaves split_out unset: chosen from the first partial.
            let mut by = f.group_by(["k"]).split_every(split_every);
            if split_out > 0 {
                by = by.split_out(split_out);
            }
            let out = by.agg(all_aggs()).unwrap();
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
    for split_out in [Some(1), Some(4), None] {
        let g = Graph::new();
        let f = Frame::from_polars(&g, many.clone(), 12).unwrap();
        let mut by = f.group_by(["k"]);
        if let Some(n) = split_out {
            by = by.split_out(n);
        }
        let out = by.agg(all_aggs()).unwrap();
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
    // The quartiles of y, within the stated rank error of its sorted values.
    let mut ys: Vec<f64> = df
        .column("y")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    ys.sort_by(f64::total_cmp);
    for (stat, q) in [("25%", 0.25), ("50%", 0.5), ("75%", 0.75)] {
        let (lo, hi) = common::rank_interval(&ys, q);
        let got = row(stat).1;
        assert!(
            (lo..=hi).contains(&got),
            "{stat} of y: {got} not in {lo}..={hi}"
        );
    }
}

/// Values for quantile tests: uniform floats, few distinct integers (ties), or a long tail.
fn quantile_values(n: usize, kind: u8, seed: u64) -> Vec<Option<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            (i % 11 != 4).then(|| match kind {
                0 => rng.f64() * 1000.0 - 300.0,
                1 => f64::from(rng.u8(0..7)),
                _ => (-(1.0 - rng.f64()).ln()).powi(3),
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn quantiles_are_within_the_stated_rank_error(
        n in 0usize..5000,
        kind in 0u8..3,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..6000, 0..12),
    ) {
        let values = quantile_values(n, kind, seed);
        let df = df!("v" => values.clone()).unwrap();
        let qs = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];
        let g = Graph::new();
        let f = Frame::from_partitions(&g, cut(&df, points)).unwrap();
        let got = compute(&g, Threads(pool()), f.quantiles("v", &qs).unwrap()).unwrap();
        let mut sorted: Vec<f64> = values.into_iter().flatten().collect();
        sorted.sort_by(f64::total_cmp);
        let total = sorted.len();
        for (q, est) in qs.iter().zip(got) {
            if sorted.is_empty() {
                prop_assert_eq!(est, None);
                continue;
            }
            let est = est.unwrap();
            // Between the values whose ranks are q - tolerance and q + tolerance, widened to
            // the next distinct value on each side (the digest interpolates between
            // neighbouring centroids, which on tied values lands between two values).
            let last = (sorted.len() - 1) as f64;
            let lo = sorted[((q - QUANTILE_RANK_ERROR).max(0.0) * last).floor() as usize];
            let hi = sorted[((q + QUANTILE_RANK_ERROR).min(1.0) * last).ceil() as usize];
            let lo = sorted.iter().rev().find(|v| **v < lo).copied().unwrap_or(lo);
            let hi = sorted.iter().find(|v| **v > hi).copied().unwrap_or(hi);
            prop_assert!(
                lo <= est && est <= hi,
                "q {} estimate {} outside {}..={} ({} values)", q, est, lo, hi, total
            );
        }
    }
}

#[test]
fn quantile_of_a_bad_column_or_q_is_a_clear_error() {
    let g = Graph::new();
    let f = Frame::from_polars(&g, data(10, 3, 1), 2).unwrap();
    let e = f.quantile("s", 0.5).unwrap_err().to_string();
    assert!(e.contains("column s is str, not numeric"), "{e}");
    let e = f.quantile("x", 1.5).unwrap_err().to_string();
    assert!(e.contains("q = 1.5 is not in 0..=1"), "{e}");
    let median = compute(&g, Inline, f.quantile("x", 0.5).unwrap()).unwrap();
    assert!(median.is_some());
}

/// The quantiles the group-by tests ask for, with their output names.
const GROUP_QS: [(&str, f64); 6] = [
    ("q0", 0.0),
    ("q10", 0.1),
    ("median", 0.5),
    ("q90", 0.9),
    ("q99", 0.99),
    ("q100", 1.0),
];

fn quantile_aggs() -> Vec<Agg> {
    let mut aggs: Vec<Agg> = GROUP_QS
        .iter()
        .map(|(name, q)| agg::quantile("v", *q).alias(*name))
        .collect();
    aggs[2] = agg::median("v").alias("median");
    // Beside the others, which stay exact.
    aggs.push(agg::sum("x"));
    aggs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// `agg::quantile` per group, on any partitioning (empty partitions too), in a tree or a
    /// hash exchange, on both local schedulers: within the stated rank error of the group's
    /// values, as Polars' own quantile (linear and nearest) is; a group of nulls only is null.
    #[test]
    fn group_by_quantiles_are_within_the_stated_rank_error(
        n in 0usize..4000,
        groups in 1i64..30,
        kind in 0u8..3,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..5000, 0..10),
        split_every in 2usize..5,
        split_out in 0usize..4,
    ) {
        let df = data(n, groups, seed);
        let v = Column::new("v".into(), quantile_values(n, kind, seed));
        let df = df.hstack(&[v]).unwrap();
        for sched in schedulers() {
            let g = Graph::new();
            let f = Frame::from_partitions(&g, cut(&df, points.clone())).unwrap();
            let mut by = f.group_by(["k"]).split_every(split_every);
            if split_out > 0 {
                by = by.split_out(split_out);
            }
            let outs = (by.agg(quantile_aggs()).unwrap(), f.reduce(quantile_aggs()).unwrap());
            let (got, total) = compute(&g, sched, outs).unwrap();
            assert_quantiles(&got, &df, &["k"], "v", &GROUP_QS);
            assert_quantiles(&total, &df, &[], "v", &GROUP_QS);
            let sums = df.clone().lazy().group_by([col("k")]).agg([col("x").sum()]);
            assert_same(&got.select(["k", "x"]).unwrap(), &sums.collect().unwrap(), &["k"]);
        }
    }
}

#[test]
fn group_by_quantiles_one_group_many_groups_and_a_group_of_nulls() {
    let n = 60_000;
    let values = quantile_values(n, 0, 3);
    let base = data(n, 1, 3);
    let v = Column::new("v".into(), values);
    // One group: every key the same (nulls in the key column are a group of their own).
    let one = base
        .hstack(std::slice::from_ref(&v))
        .unwrap()
        .lazy()
        .with_column(lit(1i64).alias("k"))
        .collect()
        .unwrap();
    // Many groups: about 20,000 of three rows each.
    let many = data(n, 20_000, 5).hstack(std::slice::from_ref(&v)).unwrap();
    // A group whose values are all null (key 7: every `v` nulled there).
    let nulls = data(n, 10, 9)
        .hstack(&[v])
        .unwrap()
        .lazy()
        .with_column(
            when(col("k").eq(lit(7i64)))
                .then(lit(NULL).cast(DataType::Float64))
                .otherwise(col("v"))
                .alias("v"),
        )
        .collect()
        .unwrap();
    for (what, df) in [
        ("one group", one),
        ("many groups", many),
        ("a null group", nulls),
    ] {
        for split_out in [Some(1), Some(3), None] {
            for sched in schedulers() {
                let g = Graph::new();
                let f = Frame::from_polars(&g, df.clone(), 7).unwrap();
                let mut by = f.group_by(["k"]);
                if let Some(n) = split_out {
                    by = by.split_out(n);
                }
                let got = compute(&g, sched, by.agg(quantile_aggs()).unwrap()).unwrap();
                eprintln!("{what}, split_out {split_out:?}: {} groups", got.height());
                assert_quantiles(&got, &df, &["k"], "v", &GROUP_QS);
            }
        }
    }
}

#[test]
fn group_by_quantile_of_a_bad_column_or_q_is_a_clear_error() {
    let g = Graph::new();
    let f = Frame::from_polars(&g, data(10, 3, 1), 2).unwrap();
    let by = f.group_by(["k"]);
    let e = by.agg([agg::quantile("s", 0.5)]).unwrap_err().to_string();
    assert!(e.contains("column s is str, not numeric"), "{e}");
    let e = by.agg([agg::quantile("x", -0.5)]).unwrap_err().to_string();
    assert!(e.contains("q = -0.5 is not in 0..=1"), "{e}");
    let e = by.agg([agg::median("nope")]).unwrap_err().to_string();
    assert!(e.contains("no column nope"), "{e}");
}

/// The grouped pictures of a frame's graphs: the DOT exactly (golden), and the SVG parsed
/// as XML with a box per operation.
#[test]
fn a_frame_draws_its_graph_grouped_by_operation() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let f = csv_files(&g, &dir, 20, 50);
    assert_eq!(f.npartitions(), 20);
    let by = f.group_by(["k"]).split_every(8);
    let tree = by.to_dot([agg::sum("x"), agg::median("y")]).unwrap();
    assert_eq!(
        tree,
        r##"digraph lovage {
  rankdir=TB;
  node [shape=box, style=filled, fontname="monospace"];
  "lovage.frame.partial" [label="lovage.frame.partial ×20", fillcolor="#cfe2ff"];
  "lovage.frame.combine" [label="lovage.frame.combine ×3", fillcolor="#cfe2ff"];
  "lovage.frame.finish" [label="lovage.frame.finish ×1", fillcolor="#cfe2ff"];
  "lovage.frame.partial" -> "lovage.frame.combine" [label="20"];
  "lovage.frame.combine" -> "lovage.frame.finish" [label="3"];
}
"##
    );
    let exchange = f.group_by(["k"]).split_out(4).to_dot([agg::len()]).unwrap();
    assert_eq!(
        exchange,
        r##"digraph lovage {
  rankdir=TB;
  node [shape=box, style=filled, fontname="monospace"];
  "lovage.frame.split_probe" [label="lovage.frame.split_probe ×1", fillcolor="#cfe2ff"];
  "lovage.frame.split_partial" [label="lovage.frame.split_partial ×19", fillcolor="#cfe2ff"];
  "lovage.frame.agg_piece" [label="lovage.frame.agg_piece ×4", fillcolor="#cfe2ff"];
  "lovage.frame.concat" [label="lovage.frame.concat ×1", fillcolor="#cfe2ff"];
  "lovage.frame.split_probe" -> "lovage.frame.split_partial" [label="19"];
  "lovage.frame.split_probe" -> "lovage.frame.agg_piece" [label="4"];
  "lovage.frame.split_partial" -> "lovage.frame.agg_piece" [label="76"];
  "lovage.frame.agg_piece" -> "lovage.frame.concat" [label="4"];
}
"##
    );
    let sorted = f.sort(&["k"], &[false]).unwrap();
    assert_eq!(
        grouped_boxes(&sorted.to_dot().unwrap()),
        [
            ("lovage.frame.sort_sample", 20),
            ("lovage.frame.sort_bounds", 1),
            ("lovage.frame.sort_split", 20),
            ("lovage.frame.range_piece", 20),
            ("lovage.frame.part", 20),
            ("lovage.frame.concat", 1),
        ]
        .map(|(n, c)| (n.to_owned(), c))
    );
    for (svg, boxes) in [
        (by.to_svg([agg::sum("x")]).unwrap(), 3),
        (sorted.to_svg().unwrap(), 6),
        (f.to_svg().unwrap(), 2),
    ] {
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
        assert_eq!(rects, boxes, "{svg}");
        let labels: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("tspan"))
            .filter_map(|n| n.text())
            .collect();
        assert!(labels.iter().all(|l| l.contains(" ×")), "{labels:?}");
    }
    if let Ok(out) = std::env::var("LOVAGE_FRAME_SVG") {
        std::fs::write(out, by.to_svg([agg::sum("x")]).unwrap()).unwrap();
    }
}
