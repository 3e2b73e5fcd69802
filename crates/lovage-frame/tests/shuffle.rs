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

#[test]
fn join_auto_broadcasts_a_small_right_side_and_hashes_a_large_one() {
    let g = Graph::new();
    let l = Frame::from_polars(&g, data(100, 5, 1), 4).unwrap();
    let small = Frame::from_polars(&g, right(20, 5, 1), 3).unwrap();
    let _ = l.join(&small, &["k"], &["k"], How::Inner).unwrap();
    assert!(
        !g.to_dot().contains("shuffle"),
        "a right side of 20 rows is broadcast"
    );
    let g = Graph::new();
    let l = Frame::from_polars(&g, data(100, 5, 1), 4).unwrap();
    let unknown = Frame::from_polars(&g, right(20, 5, 1), 3)
        .unwrap()
        .filter(col("x").gt(lit(3)))
        .unwrap();
    let _ = l.join(&unknown, &["k"], &["k"], How::Inner).unwrap();
    assert!(
        g.to_dot().contains("shuffle"),
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
