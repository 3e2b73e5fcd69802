//! Bags against serial evaluation: random partitionings (empty partitions included), on the
//! inline and the thread-pool schedulers; text and JSON-lines files read back exactly.

mod common;

use common::pictures::{assert_one_rect_per_box, box_count};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::OnceLock;

use lovage_collections::bag::{read_jsonl, read_text, Bag, OnError};
use lovage_collections::{compute, Error};
use lovage_graph::{Graph, GraphError, Inline, Scheduler, Threads};
use lovage_pool::ThreadPool;
use lovage_testkit::grouped_boxes;
use proptest::prelude::*;

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

fn schedulers() -> [Scheduler<'static>; 2] {
    [Inline, Threads(pool())]
}

/// Cuts `items` at the given (sorted, deduplicated) points: zero-length pieces are empty
/// partitions.
fn cut(items: &[i64], mut points: Vec<usize>) -> Vec<Vec<i64>> {
    points.iter_mut().for_each(|p| *p %= items.len() + 1);
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(items[at..p].to_vec());
        at = p;
    }
    out.push(items[at..].to_vec());
    out
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.triple")]
fn triple(x: i64) -> i64 {
    x * 3
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.even")]
fn even(x: i64) -> bool {
    x % 2 == 0
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.and_next")]
fn and_next(x: i64) -> Vec<i64> {
    vec![x, x + 1]
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.larger")]
fn larger(a: i64, b: i64) -> i64 {
    a.max(b)
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.last_digit")]
fn last_digit(x: i64) -> i64 {
    x.rem_euclid(10)
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.running_sums")]
fn running_sums(xs: Vec<i64>) -> Vec<i64> {
    xs.iter()
        .scan(0, |s, x| {
            *s += x;
            Some(*s)
        })
        .collect()
}

/// How many times a fold over `n` partitions, `split_every` wide, starts from its initial
/// value: once per partition and once per combining node.
fn fold_starts(mut n: usize, split_every: usize) -> usize {
    let mut starts = n;
    while n > 1 {
        n = n.div_ceil(split_every);
        starts += n;
    }
    starts.max(1)
}

/// The `k` items with the largest `key`, ties in order of appearance, serially.
fn top(items: &[i64], k: usize, key: impl Fn(i64) -> i64) -> Vec<i64> {
    let mut sorted = items.to_vec();
    sorted.sort_by_key(|&x| std::cmp::Reverse(key(x)));
    sorted.truncate(k);
    sorted
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// The reductions with registered functions on random partitionings and tree widths, on a
    /// bag that is data and on one with a closure step (the same accumulators in local nodes),
    /// against serial evaluation and the closure reductions.
    #[test]
    fn task_reductions_match_serial(
        items in prop::collection::vec(-50i64..50, 0..200),
        points in prop::collection::vec(0usize..400, 0..12),
        split_every in 2usize..6,
        k in 0usize..8,
        take_parts in 1usize..4,
    ) {
        let parts = cut(&items, points);
        let n = parts.len();
        let sum: i64 = items.iter().sum();
        let firsts: Vec<i64> = parts.iter().take(take_parts).flatten().copied().take(k).collect();
        for s in schedulers() {
            let g = Graph::new();
            let data = Bag::from_partitions(&g, parts.clone()).map_task::<i64>(triple::NAME);
            let local = Bag::from_partitions(&g, parts.clone()).map(|x| x * 3);
            prop_assert!(g.closure_steps(&data.reduce_task(larger::NAME)).unwrap().is_empty());
            for b in [&data, &local] {
                let fold = b.fold_task(3i64, add::NAME, add::NAME, split_every).unwrap();
                let closure_fold = b.fold(3i64, |a, x| a + x, |a, c| a + c, split_every);
                let fold_by = b.fold_by_task::<i64, i64>(last_digit::NAME, 0, add::NAME, add::NAME);
                let got = compute(&g, s, (
                    fold,
                    closure_fold,
                    b.reduce_task(larger::NAME),
                    b.top_k_items(k),
                    b.top_k_task(k, last_digit::NAME),
                    b.take(k, take_parts),
                )).unwrap();
                let closure_top = compute(&g, s, b.top_k(k, |x| x.rem_euclid(10))).unwrap();
                let tripled: Vec<i64> = items.iter().map(|x| x * 3).collect();
                prop_assert_eq!(got.0, 3 * sum + 3 * fold_starts(n, split_every) as i64);
                prop_assert_eq!(got.0, got.1);
                prop_assert_eq!(got.2, tripled.iter().copied().max());
                prop_assert_eq!(got.3, top(&tripled, k, |x| x));
                prop_assert_eq!(got.4, top(&tripled, k, |x| x.rem_euclid(10)));
                prop_assert_eq!(closure_top, top(&tripled, k, |x| x.rem_euclid(10)));
                prop_assert_eq!(got.5, firsts.iter().map(|x| x * 3).collect::<Vec<_>>());
                let (gr, fb) = compute(
                    &g,
                    s,
                    (b.group_by_task::<i64>(last_digit::NAME), fold_by.unwrap()),
                ).unwrap();
                let want_groups: HashMap<i64, Vec<i64>> = tripled.iter().fold(HashMap::new(), |mut m, &x| {
                    m.entry(x.rem_euclid(10)).or_insert_with(Vec::new).push(x);
                    m
                });
                prop_assert_eq!(gr, want_groups);
                let want_sums: HashMap<i64, i64> = tripled.iter().fold(HashMap::new(), |mut m, &x| {
                    *m.entry(x.rem_euclid(10)).or_insert(0) += x;
                    m
                });
                prop_assert_eq!(fb, want_sums);

                // A partition step between item steps: running sums within each partition.
                let sums = b
                    .map_partitions_task::<i64>(running_sums::NAME)
                    .filter_task(even::NAME);
                let want_sums: Vec<i64> = parts
                    .iter()
                    .flat_map(|p| {
                        p.iter().scan(0, |s, x| {
                            *s += x * 3;
                            Some(*s)
                        }).collect::<Vec<_>>()
                    })
                    .filter(|x| x % 2 == 0)
                    .collect();
                prop_assert_eq!(sums.compute(s).unwrap(), want_sums.clone());
                prop_assert_eq!(compute(&g, s, sums.count()).unwrap(), want_sums.len() as u64);
            }
        }
    }

    /// The same steps as registered tasks (a bag that is data, reduced by `lovage.bag.*`).
    #[test]
    fn task_steps_and_reductions_match_serial(
        items in prop::collection::vec(-50i64..50, 0..200),
        points in prop::collection::vec(0usize..400, 0..12),
    ) {
        let parts = cut(&items, points);
        let serial: Vec<i64> = items
            .iter()
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .collect();
        let mut seen = HashSet::new();
        let distinct: Vec<i64> = serial.iter().copied().filter(|x| seen.insert(*x)).collect();
        let mut freq = HashMap::new();
        for &x in &serial {
            *freq.entry(x).or_insert(0u64) += 1;
        }
        for s in schedulers() {
            let g = Graph::new();
            let b = Bag::from_partitions(&g, parts.clone())
                .map_task::<i64>(triple::NAME)
                .filter_task(even::NAME)
                .flat_map_task::<i64>(and_next::NAME);
            prop_assert_eq!(b.compute(s).unwrap(), serial.clone());
            let got = compute(
                &g,
                s,
                (b.count(), b.sum(), b.min(), b.max(), b.distinct(), b.frequencies()),
            )
            .unwrap();
            prop_assert_eq!(
                got,
                (
                    serial.len() as u64,
                    serial.iter().sum::<i64>(),
                    serial.iter().min().copied(),
                    serial.iter().max().copied(),
                    distinct.clone(),
                    freq.clone(),
                )
            );
            // No closure node: the whole computation could go to a process pool or a broker.
            prop_assert!(g.closure_steps(&b.count()).unwrap().is_empty());
        }
    }

    #[test]
    fn steps_and_reductions_match_serial(
        items in prop::collection::vec(-50i64..50, 0..200),
        points in prop::collection::vec(0usize..400, 0..12),
    ) {
        let parts = cut(&items, points);
        let serial_steps: Vec<i64> = items
            .iter()
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .collect();
        for s in schedulers() {
            let g = Graph::new();
            let b = Bag::from_partitions(&g, parts.clone());
            let steps = b.map(|x| x * 3).filter(|x| x % 2 == 0).flat_map(|x| [x, x + 1]);
            prop_assert_eq!(steps.compute(s).unwrap(), serial_steps.clone());

            let count = b.count();
            let sum = b.sum();
            let (min, max) = (b.min(), b.max());
            let freq = b.frequencies();
            let distinct = b.distinct();
            let top = b.top_k(5, |x| *x);
            let fold = b.fold(0i64, |a, x| a + x * x, |a, c| a + c, 3);
            let groups = b.group_by(|x| x.rem_euclid(5));
            let fold_by = b.fold_by(|x| x.rem_euclid(5), 0i64, |a, x| a + x, |a, c| a + c);
            let take = b.take(7, usize::MAX);
            let mean = b.map(|x| x as f64).mean();
            let (c, su, mi, ma, fr, di, to, fo) =
                compute(&g, s, (count, sum, min, max, freq, distinct)).map(|(a, b, c, d, e, f)| {
                    (a, b, c, d, e, f, compute(&g, s, top).unwrap(), compute(&g, s, fold).unwrap())
                }).unwrap();
            prop_assert_eq!(c, items.len() as u64);
            prop_assert_eq!(su, items.iter().sum::<i64>());
            prop_assert_eq!(mi, items.iter().copied().min());
            prop_assert_eq!(ma, items.iter().copied().max());
            let mut want_freq = HashMap::new();
            for &x in &items { *want_freq.entry(x).or_insert(0u64) += 1; }
            prop_assert_eq!(fr, want_freq);
            let mut seen = HashSet::new();
            let want_distinct: Vec<i64> = items.iter().copied().filter(|x| seen.insert(*x)).collect();
            prop_assert_eq!(di, want_distinct);
            let mut sorted: Vec<(usize, i64)> = items.iter().copied().enumerate().collect();
            sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let want_top: Vec<i64> = sorted.iter().take(5).map(|p| p.1).collect();
            prop_assert_eq!(to, want_top);
            prop_assert_eq!(fo, items.iter().map(|x| x * x).sum::<i64>());
            let (gr, fb, tk, me) = compute(&g, s, (groups, fold_by, take, mean)).unwrap();
            let mut want_groups: HashMap<i64, Vec<i64>> = HashMap::new();
            for &x in &items { want_groups.entry(x.rem_euclid(5)).or_default().push(x); }
            prop_assert_eq!(gr, want_groups.clone());
            let want_fold_by: HashMap<i64, i64> =
                want_groups.iter().map(|(k, v)| (*k, v.iter().sum())).collect();
            prop_assert_eq!(fb, want_fold_by);
            prop_assert_eq!(tk, items.iter().copied().take(7).collect::<Vec<_>>());
            if items.is_empty() {
                prop_assert!(me.is_nan());
            } else {
                let want = items.iter().sum::<i64>() as f64 / items.len() as f64;
                prop_assert!((me - want).abs() < 1e-9);
            }
        }
    }
}

#[test]
fn from_iter_cuts_evenly_and_steps_fuse_into_one_task_per_partition() {
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i64, 4);
    assert_eq!(b.npartitions(), 4);
    let parts = compute(&g, Inline, b.partitions()).unwrap();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    assert_eq!(lens, [3, 3, 2, 2]);

    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..1000i64, 4);
    let n = b
        .map(|x| x + 1)
        .filter(|x| x % 3 == 0)
        .map(|x| x * 2)
        .count();
    assert_eq!(compute(&g, Inline, n).unwrap(), 333);
    // 4 sources + 4 fused partials + 1 combine + 1 finish: no node per step.
    assert_eq!(g.last_stats().ran, 10);
}

#[test]
fn more_partitions_than_items_and_an_empty_bag() {
    let g = Graph::new();
    let b = Bag::from_iter(&g, [1i64, 2], 5);
    assert_eq!(b.compute(Inline).unwrap(), [1, 2]);
    let empty = Bag::from_iter(&g, Vec::<i64>::new(), 3);
    let (c, s, m, r) = compute(
        &g,
        Inline,
        (empty.count(), empty.sum(), empty.max(), empty.take(3, 9)),
    )
    .unwrap();
    assert_eq!((c, s, m, r), (0, 0, None, vec![]));
    let none = Bag::from_partitions(&g, Vec::<Vec<i64>>::new());
    assert_eq!(compute(&g, Inline, none.count()).unwrap(), 0);
}

#[test]
fn take_runs_only_the_partitions_it_reads() {
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..100i64, 10).try_map(|x| {
        if x >= 50 {
            Err(format!("item {x} must not run"))
        } else {
            Ok(x)
        }
    });
    assert_eq!(compute(&g, Inline, b.take(3, 1)).unwrap(), [0, 1, 2]);
    let err = compute(&g, Inline, b.count()).unwrap_err();
    assert!(err.to_string().contains("item 50 must not run"), "{err}");
}

#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "bag.below_50")]
fn below_50(x: i64) -> Result<i64, String> {
    if x >= 50 {
        Err(format!("item {x} must not run"))
    } else {
        Ok(x)
    }
}

#[test]
fn take_of_a_data_bag_stops_reading_its_partition() {
    let g = Graph::new();
    let b = Bag::from_data(&g, 0..100i64, 2)
        .unwrap()
        .map_task::<i64>(below_50::NAME);
    assert_eq!(compute(&g, Inline, b.take(3, 1)).unwrap(), [0, 1, 2]);
    let b = Bag::from_data(&g, 0..100i64, 1)
        .unwrap()
        .map_task::<i64>(below_50::NAME);
    assert_eq!(
        compute(&g, Inline, b.take(50, 1)).unwrap(),
        (0..50).collect::<Vec<_>>()
    );
    let err = compute(&g, Inline, b.take(51, 1)).unwrap_err();
    assert!(err.to_string().contains("item 50 must not run"), "{err}");
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(dir.join(name), bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30))]

    #[test]
    fn read_text_byte_ranges_give_every_line_once(
        lines in prop::collection::vec("[a-z é]{0,12}", 0..40),
        trailing_newline in any::<bool>(),
        blocksize in 1usize..64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = lines.join("\n");
        if trailing_newline && !lines.is_empty() { text.push('\n'); }
        write(dir.path(), "a.txt", text.as_bytes()).unwrap();
        write(dir.path(), "b.txt", b"x y\r\nz\n").unwrap();
        let want: Vec<String> = text.lines().map(str::to_string)
            .chain(["x y".to_string(), "z".to_string()]).collect();
        let g = Graph::new();
        let pattern = format!("{}/*.txt", dir.path().display());
        let b = read_text(&g, &pattern, Some(blocksize)).unwrap();
        for s in schedulers() {
            prop_assert_eq!(b.compute(s).unwrap(), want.clone());
            let fast = compute(&g, s, b.word_frequencies()).unwrap();
            let slow = compute(&g, s, b.map(|l| l).word_frequencies()).unwrap();
            prop_assert_eq!(fast, slow);
        }
    }
}

#[test]
fn gzip_and_zstd_files_are_whole_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let text = "one two\nthree two\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    write(dir.path(), "a.txt.gz", &gz.finish().unwrap()).unwrap();
    write(
        dir.path(),
        "b.txt.zst",
        &zstd::stream::encode_all(text.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let g = Graph::new();
    let b = read_text(&g, &format!("{}/*", dir.path().display()), Some(4)).unwrap();
    assert_eq!(b.npartitions(), 2);
    assert_eq!(
        b.compute(Inline).unwrap(),
        ["one two", "three two", "one two", "three two"]
    );
    let words = compute(&g, Threads(pool()), b.word_frequencies()).unwrap();
    assert_eq!(words["two"], 4);
}

#[test]
fn read_text_refuses_a_pattern_matching_nothing() {
    let g = Graph::new();
    let err = read_text(&g, "/nonexistent-lovage-dir/*.txt", None).unwrap_err();
    assert_eq!(
        err,
        Error::Input("no file matches \"/nonexistent-lovage-dir/*.txt\"".into())
    );
}

#[test]
fn malformed_json_lines_name_file_and_line_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "{{\"i\": {i}, \"level\": \"{}\"}}\n",
            if i % 3 == 0 { "error" } else { "info" }
        ));
        if i == 37 {
            text.push_str("{\"i\": oops\n");
        }
        if i == 10 {
            text.push_str("   \n");
        }
    }
    write(dir.path(), "log.jsonl", text.as_bytes()).unwrap();
    let pattern = format!("{}/*.jsonl", dir.path().display());
    for blocksize in [None, Some(100), Some(7)] {
        let g = Graph::new();
        let b = read_jsonl(&g, &pattern, blocksize, OnError::Fail).unwrap();
        let err = compute(&g, Threads(pool()), b.count()).unwrap_err();
        let Error::Graph(GraphError::DependencyFailed { cause, .. }) = &err else {
            panic!("{err:?}")
        };
        // Line 37 + 1 for the blank line after item 10, + 1: 1-based.
        let want = format!(
            "{}:40: invalid JSON",
            dir.path().join("log.jsonl").display()
        );
        assert!(
            cause.message.starts_with(&want),
            "{} (blocksize {blocksize:?})",
            cause.message
        );

        let b = read_jsonl(&g, &pattern, blocksize, OnError::Skip).unwrap();
        let levels = compute(
            &g,
            Inline,
            b.pluck("level").map(|v| v.to_string()).frequencies(),
        )
        .unwrap();
        assert_eq!(levels["\"error\""], 17);
        assert_eq!(levels["\"info\""], 33);
        let missing = compute(&g, Inline, b.pluck("nope").count()).unwrap_err();
        assert!(missing.to_string().contains("no key \"nope\""), "{missing}");
    }
}

#[test]
fn to_textfiles_writes_one_file_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i64, 3).map(|x| x * 10);
    let files = compute(
        &g,
        Threads(pool()),
        b.to_textfiles(dir.path().join("out")).unwrap(),
    )
    .unwrap();
    assert_eq!(files.len(), 3);
    let back = read_text(&g, &format!("{}/out/*.part", dir.path().display()), None).unwrap();
    let back: Vec<i64> = back
        .compute(Inline)
        .unwrap()
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(back, (0..10).map(|x| x * 10).collect::<Vec<_>>());
}

#[test]
fn to_textfiles_replaces_the_star_and_refuses_two() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let b = Bag::from_data(&g, ["a b".to_owned(), "c".to_owned(), "d".to_owned()], 2).unwrap();
    let files = compute(
        &g,
        Inline,
        b.to_textfiles(dir.path().join("x/part-*.txt")).unwrap(),
    )
    .unwrap();
    let want = [
        dir.path().join("x/part-000.txt"),
        dir.path().join("x/part-001.txt"),
    ];
    assert_eq!(files, want);
    assert_eq!(std::fs::read_to_string(&want[0]).unwrap(), "a b\nc\n");
    assert_eq!(std::fs::read_to_string(&want[1]).unwrap(), "d\n");
    let err = b.to_textfiles(dir.path().join("*/*.txt")).unwrap_err();
    assert!(err.to_string().contains("more than one '*'"), "{err}");
}

#[test]
fn a_panic_in_a_step_fails_that_computation_only() {
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i64, 2);
    let bad = b.map(|x| if x == 7 { panic!("seven") } else { x });
    assert!(compute(&g, Threads(pool()), bad.count()).is_err());
    assert_eq!(compute(&g, Threads(pool()), b.count()).unwrap(), 10);
}

#[test]
fn a_bag_draws_its_graph_grouped_by_operation() {
    for n in [1usize, 5, 20, 70] {
        let g = Graph::new();
        let data = Bag::from_iter(&g, 0..200i64, n).map_task::<i64>(triple::NAME);
        let dot = data.to_dot().unwrap();
        let boxes = grouped_boxes(&dot);
        // A combine tree of 8 at a time over n partials.
        let (mut level, mut combines) = (n, 0);
        while level > 1 {
            level = level.div_ceil(8);
            combines += level;
        }
        let count = |op: &str| box_count(&boxes, op);
        assert_eq!(count("lovage.bag.partial"), Some(n), "{dot}");
        assert_eq!(
            count("lovage.bag.combine"),
            (combines > 0).then_some(combines),
            "{dot}"
        );
        assert_eq!(count("lovage.bag.finish"), Some(1), "{dot}");
        let svg = data.to_svg().unwrap();
        assert_one_rect_per_box(&svg, &boxes);

        let local = Bag::from_iter(&g, 0..200i64, n)
            .map(|x| x + 1)
            .filter(|x| x % 2 == 0);
        let dot = local.to_dot().unwrap();
        let boxes = grouped_boxes(&dot);
        // The fused map and filter: one node per partition.
        assert!(boxes.contains(&("bag-partition".to_owned(), n)), "{dot}");
        assert!(boxes.len() <= 2, "{dot}");
    }
}
