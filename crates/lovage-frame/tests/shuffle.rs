//! Joins, sorts and repartitioning against one-partition Polars on the same data, on random
//! partitionings of both sides (empty partitions included), with duplicate keys, keys that
//! match nothing and null keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic to fail

use lovage_frame::polars::prelude::*;
use lovage_frame::{compute, Error, Frame, How, Strategy};
use lovage_graph::Graph;
use proptest::prelude::*;

mod common;
use common::{assert_same, cut, data, schedulers};

/// A right side for joins with `data`: keys `k` (every 6th null, values past `groups` that
/// match nothing, repeats) and `s` (`c3` matches nothing), a clashing column `x`, and `w`.
fn right(m: usize, groups: i64, seed: u64) -> DataFrame {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let k: Vec<Option<i64>> = (0..m)
        .map(|i| (i % 6 != 2).then(|| rng.i64(0..groups + 3)))
        .collect();
    let s: Vec<String> = (0..m).map(|_| format!("c{}", rng.u8(0..4))).collect();
    let x: Vec<i64> = (0..m).map(|_| rng.i64(0..50)).collect();
    let w: Vec<String> = (0..m).map(|i| format!("w{i}")).collect();
    df!("k" => k, "s" => s, "x" => x, "w" => w).unwrap()
}

/// Polars' own join of the two whole frames.
fn polars_join(l: &DataFrame, r: &DataFrame, on: &[&str], how: How) -> DataFrame {
    let on: Vec<Expr> = on.iter().map(|k| col(*k)).collect();
    let how = match how {
        How::Inner => JoinType::Inner,
        How::Left => JoinType::Left,
    };
    l.clone()
        .lazy()
        .join(r.clone().lazy(), &on, &on, JoinArgs::new(how))
        .collect()
        .unwrap()
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Auto),
        Just(Strategy::Hash),
        Just(Strategy::Broadcast)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn join_matches_polars_on_any_partitioning(
        n in 0usize..200,
        m in 0usize..80,
        groups in 1i64..30,
        seed in any::<u64>(),
        lpoints in proptest::collection::vec(0usize..300, 0..6),
        rpoints in proptest::collection::vec(0usize..100, 0..6),
        left in any::<bool>(),
        two_keys in any::<bool>(),
        strat in strategy(),
    ) {
        let (l, r) = (data(n, groups, seed), right(m, groups, seed));
        let how = if left { How::Left } else { How::Inner };
        let on: &[&str] = if two_keys { &["k", "s"] } else { &["k"] };
        let want = polars_join(&l, &r, on, how);
        for sched in schedulers() {
            let g = Graph::new();
            let lf = Frame::from_partitions(&g, cut(&l, lpoints.clone())).unwrap();
            let rf = Frame::from_partitions(&g, cut(&r, rpoints.clone())).unwrap();
            let joined = lf.join_with(&rf, on, on, how, strat).unwrap();
            prop_assert_eq!(joined.schema(), want.schema());
            let got = compute(&g, sched, joined.collect()).unwrap();
            assert_same(&got, &want, &[]);
        }
    }
}

#[test]
fn join_with_duplicate_keys_gives_every_pair_and_no_match_gives_nothing_or_nulls() {
    let l = df!("k" => [Some(1i64), Some(1), Some(2), None, Some(4)], "a" => [1i64, 2, 3, 4, 5])
        .unwrap();
    let r =
        df!("k" => [Some(1i64), Some(1), Some(1), None, Some(9)], "b" => ["x", "y", "z", "n", "q"])
            .unwrap();
    for strat in [Strategy::Hash, Strategy::Broadcast] {
        let g = Graph::new();
        let lf = Frame::from_polars(&g, l.clone(), 3).unwrap();
        let rf = Frame::from_polars(&g, r.clone(), 2).unwrap();
        let inner = lf
            .join_with(&rf, &["k"], &["k"], How::Inner, strat)
            .unwrap();
        let left = lf.join_with(&rf, &["k"], &["k"], How::Left, strat).unwrap();
        let (inner, left) =
            compute(&g, schedulers()[1], (inner.collect(), left.collect())).unwrap();
        // Two left rows with key 1 times three right rows; the null keys match nothing.
        assert_eq!(inner.height(), 6, "{inner}");
        assert_eq!(left.height(), 6 + 3, "{left}");
        assert_eq!(left.column("b").unwrap().null_count(), 3, "{left}");

        let none = df!("k" => [7i64, 8], "b" => ["p", "q"]).unwrap();
        let nf = Frame::from_polars(&g, none, 2).unwrap();
        let inner = lf
            .join_with(&nf, &["k"], &["k"], How::Inner, strat)
            .unwrap();
        let left = lf.join_with(&nf, &["k"], &["k"], How::Left, strat).unwrap();
        let (inner, left) =
            compute(&g, schedulers()[0], (inner.collect(), left.collect())).unwrap();
        assert_eq!(inner.height(), 0);
        assert_eq!(inner.get_column_names(), ["k", "a", "b"]);
        assert_eq!(left.height(), 5);
        assert_eq!(left.column("b").unwrap().null_count(), 5);
    }
}

/// Whether the graph's picture shows a hash exchange (the closure one, or the map tasks of a
/// frame of data).
fn hashed(dot: &str) -> bool {
    dot.contains("shuffle") || dot.contains("lovage.frame.split")
}

#[test]
fn join_auto_broadcasts_a_small_right_side_and_hashes_a_large_one() {
    let g = Graph::new();
    let l = Frame::from_polars(&g, data(100, 5, 1), 4).unwrap();
    let small = Frame::from_polars(&g, right(20, 5, 1), 3).unwrap();
    let _ = l.join(&small, &["k"], &["k"], How::Inner).unwrap();
    assert!(!hashed(&g.to_dot()), "a right side of 20 rows is broadcast");
    let g = Graph::new();
    let l = Frame::from_polars(&g, data(100, 5, 1), 4).unwrap();
    let unknown = Frame::from_polars(&g, right(20, 5, 1), 3)
        .unwrap()
        .filter(col("x").gt(lit(3)))
        .unwrap();
    let _ = l.join(&unknown, &["k"], &["k"], How::Inner).unwrap();
    assert!(
        hashed(&g.to_dot()),
        "a filtered right side of unknown size in 3 partitions is hashed"
    );
}

#[test]
fn join_with_bad_keys_is_a_clear_error() {
    let g = Graph::new();
    let l = Frame::from_polars(&g, data(10, 5, 1), 2).unwrap();
    let r = Frame::from_polars(&g, right(10, 5, 1), 2).unwrap();
    let msg = |e: Error| e.to_string();
    let e = msg(l.join(&r, &["k"], &["w"], How::Inner).unwrap_err());
    assert!(e.contains("key k is i64") && e.contains("w is str"), "{e}");
    let e = msg(l.join(&r, &["k", "s"], &["k"], How::Inner).unwrap_err());
    assert!(e.contains("2 left key(s) and 1 right key(s)"), "{e}");
    let e = msg(l.join(&r, &["nope"], &["k"], How::Left).unwrap_err());
    assert!(e.contains("no column nope on the left"), "{e}");
}

fn sort_keys() -> impl proptest::strategy::Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        Just(vec!["k"]),
        Just(vec!["s", "k"]),
        Just(vec!["y"]),
        Just(vec!["x", "s"])
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sort_matches_polars_stable_sort_on_any_partitioning(
        n in 0usize..300,
        groups in 1i64..40,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..400, 0..8),
        by in sort_keys(),
        desc in proptest::collection::vec(any::<bool>(), 2),
    ) {
        let df = data(n, groups, seed);
        let desc = &desc[..by.len()];
        let opts = SortMultipleOptions::default()
            .with_order_descending_multi(desc.to_vec())
            .with_nulls_last(true)
            .with_maintain_order(true);
        let want = df.sort(by.clone(), opts).unwrap();
        for sched in schedulers() {
            let g = Graph::new();
            let parts = cut(&df, points.clone());
            let np = parts.len();
            let f = Frame::from_partitions(&g, parts).unwrap();
            let sorted = f.sort(&by, desc).unwrap();
            prop_assert_eq!(sorted.npartitions(), np);
            let got = compute(&g, sched, sorted.collect()).unwrap();
            prop_assert!(got.equals_missing(&want), "by {:?} {:?}:\n{}\n{}", by, desc, got, want);
        }
    }

    #[test]
    fn repartition_keeps_rows_and_order_in_even_partitions(
        n in 0usize..300,
        seed in any::<u64>(),
        points in proptest::collection::vec(0usize..400, 0..8),
        k in 1usize..9,
    ) {
        let df = data(n, 5, seed);
        for sched in schedulers() {
            let g = Graph::new();
            let f = Frame::from_partitions(&g, cut(&df, points.clone())).unwrap();
            let r = f.repartition(k);
            prop_assert_eq!(r.npartitions(), k);
            let (all, parts) = compute(&g, sched, (r.collect(), r.partitions())).unwrap();
            prop_assert!(all.equals_missing(&df));
            let hs: Vec<usize> = parts.iter().map(DataFrame::height).collect();
            prop_assert!(hs.iter().max().unwrap() - hs.iter().min().unwrap() <= 1, "{:?}", hs);
        }
    }
}

#[test]
fn sort_ranges_are_balanced_and_set_index_orders_partitions() {
    let df = data(20_000, 1_000_000, 7);
    let g = Graph::new();
    let f = Frame::from_polars(&g, df.clone(), 4).unwrap();
    let indexed = f.set_index("y").unwrap();
    let parts = compute(&g, schedulers()[1], indexed.partitions()).unwrap();
    let mut last = f64::NEG_INFINITY;
    for p in &parts {
        // Ranges from 320 sampled keys: each near a quarter of the rows.
        assert!(
            (3_000..=7_000).contains(&p.height()),
            "range of {} rows",
            p.height()
        );
        let y = p.column("y").unwrap().f64().unwrap();
        assert!(y.get(0).unwrap() >= last, "ranges overlap");
        last = y.get(y.len() - 1).unwrap();
    }
    let e = f.sort(&["nope"], &[false]).unwrap_err().to_string();
    assert!(e.contains("no column nope"), "{e}");
    let e = f
        .sort(&["k", "y"], &[true, false, true])
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 descending flags for 2 columns"), "{e}");
}
