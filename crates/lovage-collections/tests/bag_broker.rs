//! Bags on every scheduler (issue 17, item 4): a bag whose steps are registered tasks
//! (`map_task`, `filter_task`, `flat_map_task`) over `from_iter` items, `read_text` byte ranges
//! and `read_jsonl` gives the same results on `Inline`, `Threads`, a process pool, a memory
//! broker with a worker in this process, and SQLite and Redis brokers with two worker processes
//! each, all checked against the answer computed serially here. A closure step is still refused
//! before anything is sent, and a task step's errors come back named.
//!
//! The process pool's children and the broker's worker processes are this test binary started
//! again (so they know its tasks), hence `harness = false`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use libtest_mimic::{Arguments, Trial};
use lovage_broker::{connect, App};
use lovage_collections::bag::{read_jsonl, read_text, Bag, OnError};
use lovage_collections::{compute, Error};
use lovage_graph::{Broker, Graph, Inline, Processes, Scheduler, Threads};
use lovage_macros::task;
use lovage_pool::{ProcessPool, ThreadPool};
use lovage_testkit::on_brokers;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.split_words")]
fn split_words(line: String) -> Vec<String> {
    line.split_ascii_whitespace().map(str::to_owned).collect()
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.lower")]
fn lower(word: String) -> String {
    word.to_lowercase()
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.is_long")]
fn is_long(word: String) -> bool {
    word.len() > 4
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.square")]
fn square(x: i32) -> i32 {
    x * x
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.odd")]
fn odd(x: i32) -> bool {
    x % 2 != 0
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.halve")]
fn halve(x: f64) -> f64 {
    x / 2.0
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.level")]
fn level(record: serde_json::Value) -> Result<String, String> {
    match record.get("level").and_then(|l| l.as_str()) {
        Some(l) => Ok(l.to_owned()),
        None => Err(format!("no level in {record}")),
    }
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.never")]
fn never(_x: i32) -> bool {
    false
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.not_a_bool")]
fn not_a_bool(x: i32) -> i32 {
    x
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.pid")]
fn pid(_x: i32) -> u32 {
    std::process::id()
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.plus_item")]
fn plus_item(acc: i64, x: i32) -> i64 {
    acc + i64::from(x)
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.plus")]
fn plus(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.larger")]
fn larger(a: i32, b: i32) -> i32 {
    a.max(b)
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.last_digit")]
fn last_digit(x: i32) -> i32 {
    x % 10
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.rem5")]
fn rem5(x: i32) -> i32 {
    x.rem_euclid(5)
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.word_len")]
fn word_len(word: String) -> usize {
    word.len()
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.picky_key")]
fn picky_key(x: i32) -> Result<i32, String> {
    if x == 49 {
        Err(format!("no key for {x}"))
    } else {
        Ok(x)
    }
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.len_and_sum")]
fn len_and_sum(xs: Vec<i32>) -> Vec<i64> {
    vec![xs.len() as i64, xs.iter().map(|&x| i64::from(x)).sum()]
}

#[task(crate = lovage_core, graph = lovage_graph, name = "bag_broker.not_a_list")]
fn not_a_list(xs: Vec<i32>) -> usize {
    xs.len()
}

/// The step tasks ran in other processes, not in this one.
fn ran_elsewhere(sched: Scheduler<'_>) {
    let g = Graph::new();
    let pids = Bag::from_iter(&g, 0..32i32, 8)
        .map_task::<u32>(pid::NAME)
        .distinct();
    let pids = compute(&g, sched, pids).unwrap();
    assert!(
        !pids.is_empty() && !pids.contains(&std::process::id()),
        "{pids:?}"
    );
}

const WORDS: [&str; 12] = [
    "Lovage",
    "celery",
    "DASK",
    "bag",
    "Partition",
    "worker",
    "broker",
    "the",
    "a",
    "Graph",
    "lovage",
    "Celery",
];

/// A directory of text files (one with a line longer than a partition, one with a CRLF line
/// and no final newline) and a JSON-lines log with a malformed line.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(17);
        for f in 0..3 {
            let mut out = std::fs::File::create(dir.path().join(format!("{f}.txt"))).unwrap();
            for line in 0..120 {
                let n = if line == 7 { 400 } else { rng.usize(0..9) };
                let words: Vec<&str> = (0..n).map(|_| WORDS[rng.usize(0..WORDS.len())]).collect();
                write!(out, "{}", words.join(" ")).unwrap();
                if !(f == 2 && line == 119) {
                    write!(out, "{}", if line == 3 { "\r\n" } else { "\n" }).unwrap();
                }
            }
        }
        let mut log = std::fs::File::create(dir.path().join("log.jsonl")).unwrap();
        for i in 0..200 {
            let level = ["info", "warn", "error"][rng.usize(0..3)];
            writeln!(log, "{{\"level\": \"{level}\", \"n\": {i}}}").unwrap();
            if i == 50 {
                writeln!(log, "{{not json").unwrap();
            }
        }
        dir
    })
    .path()
}

/// Every line of the text files, in file order, serially.
fn lines() -> Vec<String> {
    let mut out = Vec::new();
    for f in 0..3 {
        let text = std::fs::read_to_string(data_dir().join(format!("{f}.txt"))).unwrap();
        out.extend(text.lines().map(str::to_owned));
    }
    out
}

fn count<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, u64> {
    let mut m = HashMap::new();
    for x in items {
        *m.entry(x).or_insert(0) += 1;
    }
    m
}

/// Everything computed on `sched`, checked against the serial answers; also returned, so
/// the floats can be compared bit for bit with `Inline`'s.
fn check(name: &str, sched: Scheduler<'_>) -> (f64, f64) {
    let g = Graph::new();
    let pattern = format!("{}/*.txt", data_dir().display());
    let text = read_text(&g, &pattern, Some(700)).unwrap();
    assert!(
        text.npartitions() > 3,
        "{name}: several partitions per file"
    );

    // Word count over the files' byte ranges (read by the tasks, not sent).
    let words = compute(&g, sched, text.word_frequencies()).unwrap();
    let want_words = count(
        lines()
            .iter()
            .flat_map(|l| l.split_ascii_whitespace().map(str::to_owned)),
    );
    assert_eq!(words, want_words, "{name}: word_frequencies");

    // A pipeline of task steps, fused into one task per partition.
    let long = text
        .flat_map_task::<String>(split_words::NAME)
        .map_task::<String>(lower::NAME)
        .filter_task(is_long::NAME);
    let (freq, n, distinct, longest, first) = compute(
        &g,
        sched,
        (
            long.frequencies(),
            long.count(),
            long.distinct(),
            long.max(),
            long.min(),
        ),
    )
    .unwrap();
    let serial: Vec<String> = lines()
        .iter()
        .flat_map(|l| l.split_ascii_whitespace().map(str::to_lowercase))
        .filter(|w| w.len() > 4)
        .collect();
    assert_eq!(freq, count(serial.iter().cloned()), "{name}: frequencies");
    assert_eq!(n, serial.len() as u64, "{name}: count");
    let mut seen = HashSet::new();
    let want_distinct: Vec<String> = serial
        .iter()
        .filter(|w| seen.insert(w.to_string()))
        .cloned()
        .collect();
    assert_eq!(distinct, want_distinct, "{name}: distinct");
    assert_eq!(longest, serial.iter().max().cloned(), "{name}: max");
    assert_eq!(first, serial.iter().min().cloned(), "{name}: min");
    assert_eq!(
        compute(&g, sched, text.map_task::<String>(lower::NAME).count()).unwrap(),
        lines().len() as u64,
        "{name}: lines"
    );

    // Numbers from items given here, with empty partitions at the end.
    let xs = Bag::from_iter(&g, -300..700i32, 7)
        .map_task::<i32>(square::NAME)
        .filter_task(odd::NAME);
    let (sum, k, lo, hi, mean) = compute(
        &g,
        sched,
        (xs.sum(), xs.count(), xs.min(), xs.max(), xs.mean()),
    )
    .unwrap();
    let want: Vec<i32> = (-300..700i32)
        .map(|x| x * x)
        .filter(|x| x % 2 != 0)
        .collect();
    assert_eq!(sum, want.iter().sum::<i32>(), "{name}: sum");
    assert_eq!(k, want.len() as u64, "{name}: count");
    assert_eq!(
        (lo, hi),
        (want.iter().min().copied(), want.iter().max().copied()),
        "{name}"
    );
    let want_mean = want.iter().map(|&x| f64::from(x)).sum::<f64>() / want.len() as f64;
    assert!((mean - want_mean).abs() < 1e-9 * want_mean, "{name}: mean");
    assert_eq!(xs.compute(sched).unwrap(), want, "{name}: compute");
    let few = Bag::from_iter(&g, 1..4i32, 6).map_task::<i32>(square::NAME);
    let (s, m, none) = compute(
        &g,
        sched,
        (few.sum(), few.max(), few.filter_task(never::NAME).max()),
    )
    .unwrap();
    assert_eq!(
        (s, m, none),
        (14, Some(9), None),
        "{name}: empty partitions"
    );

    // Floats: a sum that is not exact, and an empty mean (NaN) through every encoding.
    let fs = Bag::from_data(&g, (0..999).map(|i| f64::from(i) * 0.1), 5)
        .unwrap()
        .map_task::<f64>(halve::NAME);
    let empty = Bag::from_data(&g, Vec::<f64>::new(), 3).unwrap();
    let (fsum, nan) = compute(&g, sched, (fs.sum(), empty.mean())).unwrap();
    let want_fsum: f64 = (0..999).map(|i| f64::from(i) * 0.1 / 2.0).sum();
    assert!(
        (fsum - want_fsum).abs() < 1e-9 * want_fsum,
        "{name}: float sum"
    );
    assert!(nan.is_nan(), "{name}: mean of nothing");

    // JSON lines: a malformed line skipped, levels counted by a task.
    let logs = read_jsonl(
        &g,
        &format!("{}/*.jsonl", data_dir().display()),
        Some(1000),
        OnError::Skip,
    )
    .unwrap();
    let levels = compute(
        &g,
        sched,
        logs.map_task::<String>(level::NAME).frequencies(),
    )
    .unwrap();
    let log = std::fs::read_to_string(data_dir().join("log.jsonl")).unwrap();
    let want_levels = count(
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["level"].as_str().unwrap().to_owned()),
    );
    assert_eq!(levels, want_levels, "{name}: levels");

    // Errors come back named: a malformed line, a task's own error, a filter that answers
    // no bool, an unknown task.
    let strict = read_jsonl(
        &g,
        &format!("{}/*.jsonl", data_dir().display()),
        None,
        OnError::Fail,
    )
    .unwrap();
    let err = compute(&g, sched, strict.count()).unwrap_err().to_string();
    assert!(err.contains("log.jsonl:52: invalid JSON"), "{name}: {err}");
    let plain = Bag::from_iter(&g, [serde_json::json!({"n": 1})], 1);
    let err = compute(&g, sched, plain.map_task::<String>(level::NAME).count())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no level in"), "{name}: {err}");
    let err = compute(&g, sched, few.filter_task(not_a_bool::NAME).count())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a bool"), "{name}: {err}");
    let err = compute(&g, sched, few.map_task::<i32>("bag_broker.nowhere").count())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bag_broker.nowhere"), "{name}: {err}");
    (fsum, mean)
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

/// The reductions with registered functions (`fold_task`, `reduce_task`, `top_k_*`,
/// `group_by_task`, `fold_by_task`), `take` and `to_textfiles` on `sched`, against serial
/// answers.
fn check_task_reductions(name: &str, sched: Scheduler<'_>) {
    let g = Graph::new();
    let xs = Bag::from_iter(&g, -300..700i32, 7)
        .map_task::<i32>(square::NAME)
        .filter_task(odd::NAME);
    let want: Vec<i32> = (-300..700i32)
        .map(|x| x * x)
        .filter(|x| x % 2 != 0)
        .collect();
    let total: i64 = want.iter().map(|&x| i64::from(x)).sum();

    // An initial value that is not the identity counts the tree's nodes: split_every shapes it.
    for split_every in [2, 3, 8] {
        let folded = xs
            .fold_task(10i64, plus_item::NAME, plus::NAME, split_every)
            .unwrap();
        assert_eq!(
            compute(&g, sched, folded).unwrap(),
            total + 10 * fold_starts(7, split_every) as i64,
            "{name}: fold_task, split_every {split_every}"
        );
    }
    let none = xs.filter_task(never::NAME);
    let (biggest, nothing, empty_fold) = compute(
        &g,
        sched,
        (
            xs.reduce_task(larger::NAME),
            none.reduce_task(larger::NAME),
            none.fold_task(5i64, plus_item::NAME, plus::NAME, 3)
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(biggest, want.iter().max().copied(), "{name}: reduce_task");
    assert_eq!(nothing, None, "{name}: reduce_task of nothing");
    // 7 empty partials, 3 combining nodes, then 1.
    assert_eq!(empty_fold, 5 * 11, "{name}: fold_task of nothing");

    // top_k by the items and by a key task, with ties (in order of appearance).
    let (top, by_digit) = compute(
        &g,
        sched,
        (xs.top_k_items(5), xs.top_k_task(6, last_digit::NAME)),
    )
    .unwrap();
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(top, sorted[..5], "{name}: top_k_items");
    let mut by_key = want.clone();
    by_key.sort_by_key(|x| std::cmp::Reverse(x % 10));
    assert_eq!(by_digit, by_key[..6], "{name}: top_k_task");

    // take: only the first partitions (-300..-14 are the first two of seven).
    let (five, firsts) = compute(&g, sched, (xs.take(5, 1), xs.take(10_000, 2))).unwrap();
    assert_eq!(five, want[..5], "{name}: take");
    let want_firsts: Vec<i32> = (-300..-14i32)
        .map(|x| x * x)
        .filter(|x| x % 2 != 0)
        .collect();
    assert_eq!(firsts, want_firsts, "{name}: take of two partitions");

    // group_by / fold_by with key tasks.
    let (groups, sums) = compute(
        &g,
        sched,
        (
            xs.group_by_task::<i32>(rem5::NAME),
            xs.fold_by_task::<i32, i64>(rem5::NAME, 0, plus_item::NAME, plus::NAME)
                .unwrap(),
        ),
    )
    .unwrap();
    let mut want_groups: HashMap<i32, Vec<i32>> = HashMap::new();
    for &x in &want {
        want_groups.entry(x.rem_euclid(5)).or_default().push(x);
    }
    assert_eq!(groups, want_groups, "{name}: group_by_task");
    let want_sums: HashMap<i32, i64> = want_groups
        .iter()
        .map(|(k, v)| (*k, v.iter().map(|&x| i64::from(x)).sum()))
        .collect();
    assert_eq!(sums, want_sums, "{name}: fold_by_task");

    // Over files: words grouped by length, the first lines, and the words written back out.
    let pattern = format!("{}/*.txt", data_dir().display());
    let text = read_text(&g, &pattern, Some(700)).unwrap();
    let words = text
        .flat_map_task::<String>(split_words::NAME)
        .map_task::<String>(lower::NAME);
    let serial: Vec<String> = lines()
        .iter()
        .flat_map(|l| l.split_ascii_whitespace().map(str::to_lowercase))
        .collect();
    let (by_len, first_lines, longest) = compute(
        &g,
        sched,
        (
            words.group_by_task::<usize>(word_len::NAME),
            text.take(3, 1),
            words.top_k_task(3, word_len::NAME),
        ),
    )
    .unwrap();
    let mut want_by_len: HashMap<usize, Vec<String>> = HashMap::new();
    for w in &serial {
        want_by_len.entry(w.len()).or_default().push(w.clone());
    }
    assert_eq!(by_len, want_by_len, "{name}: group_by_task over files");
    assert_eq!(first_lines, lines()[..3], "{name}: take over files");
    let mut by_len = serial.clone();
    by_len.sort_by_key(|w| std::cmp::Reverse(w.len()));
    assert_eq!(longest, by_len[..3], "{name}: top_k_task over files");

    let out = tempfile::tempdir().unwrap();
    let paths = compute(
        &g,
        sched,
        words.to_textfiles(out.path().join("words-*.txt")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        paths.len(),
        text.npartitions(),
        "{name}: one file per partition"
    );
    assert_eq!(paths[1], out.path().join("words-001.txt"), "{name}");
    let back: Vec<String> = paths
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(back, serial, "{name}: to_textfiles");
    let paths = compute(&g, sched, xs.to_textfiles(out.path().join("xs")).unwrap()).unwrap();
    let back: Vec<i32> = paths
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().map(|l| l.parse().unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(back, want, "{name}: to_textfiles of numbers");

    // A partition step between item steps: each partition's length and sum, then a filter.
    let stats = Bag::from_iter(&g, -300..700i32, 7)
        .map_task::<i32>(square::NAME)
        .filter_task(odd::NAME)
        .map_partitions_task::<i64>(len_and_sum::NAME);
    let all = stats.compute(sched).unwrap();
    let (total_of_stats, first_stats) =
        compute(&g, sched, (stats.sum(), stats.take(2, 1))).unwrap();
    let mut want_stats = Vec::new();
    let (mut at, items): (usize, Vec<i32>) = (0, (-300..700).collect());
    for len in [143, 143, 143, 143, 143, 143, 142] {
        let part: Vec<i64> = items[at..at + len]
            .iter()
            .map(|x| i64::from(x * x))
            .filter(|x| x % 2 != 0)
            .collect();
        want_stats.extend([part.len() as i64, part.iter().sum()]);
        at += len;
    }
    assert_eq!(all, want_stats, "{name}: map_partitions_task");
    assert_eq!(total_of_stats, want_stats.iter().sum::<i64>(), "{name}");
    assert_eq!(first_stats, want_stats[..2], "{name}");
    let err = compute(
        &g,
        sched,
        xs.map_partitions_task::<usize>(not_a_list::NAME).count(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a list"), "{name}: {err}");

    // Errors come back named: a key task that fails, an unknown task.
    let err = compute(&g, sched, xs.group_by_task::<i32>(picky_key::NAME))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no key for 49"), "{name}: {err}");
    let err = compute(&g, sched, xs.reduce_task("bag_broker.nowhere_binop"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bag_broker.nowhere_binop"), "{name}: {err}");
    let err = compute(&g, sched, xs.top_k_task(2, "bag_broker.nowhere_key"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bag_broker.nowhere_key"), "{name}: {err}");
}

/// A closure step cannot cross processes: refused before anything runs, naming the step.
fn closure_refused(sched: Scheduler<'_>, scheduler: &'static str) {
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i32, 2).map_task::<i32>(square::NAME);
    let err = compute(&g, sched, b.map(|x| x + 1).count()).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            scheduler,
            op: "bag-partial".into()
        }
    );
}

fn threads() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

/// Inline's answers, for the bit-for-bit comparison of the floats.
fn inline() -> (f64, f64) {
    static INLINE: OnceLock<(f64, f64)> = OnceLock::new();
    *INLINE.get_or_init(|| check("inline", Inline))
}

fn same_floats(name: &str, got: (f64, f64)) {
    let want = inline();
    assert_eq!(
        (got.0.to_bits(), got.1.to_bits()),
        (want.0.to_bits(), want.1.to_bits()),
        "{name}: {got:?} vs inline {want:?}"
    );
}

/// Two worker processes on `url`, the same answers as serially and as `Inline`.
fn on_broker(url: &str, name: &str) {
    let _a = common::worker(url, "bag-a");
    let _b = common::worker(url, "bag-b");
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    same_floats(name, check(name, Broker(&client)));
    check_task_reductions(name, Broker(&client));
    closure_refused(Broker(&client), "Broker");
    ran_elsewhere(Broker(&client));
}

fn main() {
    lovage_pool::child_main();
    if common::serve_role() {
        return;
    }
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("bags_on_local_schedulers_match_serial", || {
            inline();
            same_floats("threads", check("threads", Threads(threads())));
            check_task_reductions("inline", Inline);
            check_task_reductions("threads", Threads(threads()));
            Ok(())
        }),
        Trial::test("bags_on_a_process_pool_match_serial", || {
            let pool = ProcessPool::new(2);
            same_floats("processes", check("processes", Processes(&pool)));
            check_task_reductions("processes", Processes(&pool));
            closure_refused(Processes(&pool), "Processes");
            ran_elsewhere(Processes(&pool));
            Ok(())
        }),
        Trial::test("bags_on_a_memory_broker_match_serial", || {
            let url = format!("memory://bag-broker-{}", lovage_core::TaskId::new());
            let backend = connect(&url).unwrap();
            let config = WorkerConfig {
                pool: PoolKind::Threads,
                concurrency: 2,
                poll: Duration::from_millis(20),
                ..WorkerConfig::default()
            };
            let worker = Worker::new(backend.clone(), config).unwrap();
            let stop = worker.shutdown_handle();
            let running = std::thread::spawn(move || worker.run());
            let client = App::with_backend(backend).client().unwrap();
            same_floats("broker memory", check("broker memory", Broker(&client)));
            check_task_reductions("broker memory", Broker(&client));
            closure_refused(Broker(&client), "Broker");
            drop(client);
            stop.graceful();
            running.join().unwrap().unwrap();
            Ok(())
        }),
    ];
    trials.extend(on_brokers(
        &["sqlite", "redis"],
        "bags_on_workers_match_serial",
        |f| {
            on_broker(
                &f.url,
                &format!("broker {}", f.url.split(':').next().unwrap_or("?")),
            )
        },
    ));
    libtest_mimic::run(&args, trials).exit();
}
