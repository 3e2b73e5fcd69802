//! The seed's `dask.delayed` example, `add(square(2), square(3)).compute()`, on every local
//! scheduler and on a broker (whose workers resolve the dependencies), then a larger
//! reduction: a tree of sums over squares, with one bad input whose failure reaches only the
//! branch that depends on it. Last, a graph handed to the broker with `submit`, whose client
//! goes away before it finishes.
//!
//! Run: `cargo run --release --example graph_delayed` (add `--quick` for a tiny run)

use std::time::{Duration, Instant};

use lovage::graph::{Broker, Delayed, Graph, GraphError, Inline, Processes, Scheduler, Threads};
use lovage::workloads::quick_from_args;
use lovage::{App, PoolKind, ProcessPool, ThreadPool, Worker, WorkerConfig};

#[lovage::task]
fn square(x: i64) -> i64 {
    x * x
}

#[lovage::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[lovage::task]
fn checked_sqrt(x: i64) -> Result<i64, String> {
    if x < 0 {
        return Err(format!("no real square root of {x}"));
    }
    Ok((x as f64).sqrt() as i64)
}

/// Sums `xs` pairwise, one `add` per pair, into one handle.
fn tree_sum(g: &Graph, mut xs: Vec<Delayed<i64>>) -> Delayed<i64> {
    while xs.len() > 1 {
        xs = xs
            .chunks(2)
            .map(|p| match p {
                [a, b] => add::delayed(g, *a, *b),
                [a, ..] => *a,
                [] => unreachable!(),
            })
            .collect();
    }
    xs[0]
}

fn main() {
    lovage::init();
    let n: i64 = if quick_from_args() { 1_000 } else { 200_000 };
    let threads = ThreadPool::new(2);
    let processes = ProcessPool::new(2);
    // A broker (an SQLite file) with a worker in a thread; in production the workers are
    // `lovage worker` processes on any host.
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = App::connect(&format!(
        "sqlite://{}",
        dir.path().join("graph.db").display()
    ))
    .expect("open the broker");
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        ..Default::default()
    };
    let worker = Worker::new(app.backend().clone(), config).expect("start the worker");
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    let client = app.client().expect("start the client");
    // Every node is a message on the broker: a smaller reduction there.
    let schedulers: [(&str, Scheduler<'_>, i64); 4] = [
        ("inline", Inline, n),
        ("threads", Threads(&threads), n),
        ("processes", Processes(&processes), n),
        ("broker", Broker(&client), n.min(10_000)),
    ];

    for (name, s, n) in schedulers {
        // The seed: add(square(2), square(3)).
        let g = Graph::new();
        let total = add::delayed(&g, square::delayed(&g, 2), square::delayed(&g, 3));
        let seed = g.compute(s, total).expect("the seed's graph runs");
        assert_eq!(seed, 13);

        // A reduction of n squares, plus one branch that fails.
        let t = Instant::now();
        let g = Graph::with_capacity(2 * n as usize, 2 * n as usize);
        let squares = (1..=n).map(|i| square::delayed(&g, i)).collect();
        let sum = tree_sum(&g, squares);
        let root = checked_sqrt::delayed(&g, sum);
        let bad = checked_sqrt::delayed(&g, add::delayed(&g, sum, -(n * n * n)));
        let built = t.elapsed();
        let t = Instant::now();
        let (sum_v, root_v, bad_v) = g.compute_partial(s, (sum, root, bad)).expect("runs");
        let ran = t.elapsed();
        let sum_v = sum_v.expect("the sum succeeds");
        assert_eq!(sum_v, n * (n + 1) * (2 * n + 1) / 6);
        assert!(root_v.is_ok());
        match bad_v {
            Err(GraphError::Failed { error, .. }) => assert!(error.message.contains("no real")),
            other => panic!("expected the bad branch to fail, got {other:?}"),
        }
        let st = g.last_stats();
        println!(
            "{name:>9}: add(square(2), square(3)) = {seed}; sum of {n} squares = {sum_v} \
             ({} nodes built in {:.1} ms, run in {:.1} ms, {} dispatches, {} failed)",
            st.nodes,
            built.as_secs_f64() * 1e3,
            ran.as_secs_f64() * 1e3,
            st.dispatches,
            st.failed,
        );
    }

    // Dask's client.compute: the graph goes to the broker and this client may leave; any
    // other client waits on the outputs by id.
    let g = Graph::new();
    let squares = (1..=100).map(|i| square::delayed(&g, i)).collect();
    let sum = tree_sum(&g, squares);
    let sender = app.client().expect("start a client");
    let sent = g.submit(&sender, vec![sum]).expect("submit the graph");
    let id = sent.futures[0].id();
    drop(sent);
    drop(sender);
    let value = client
        .future::<i64>(id)
        .result_timeout(Duration::from_secs(60))
        .expect("the graph finishes without its sender");
    assert_eq!(value, 338_350);
    println!("submitted, sender gone: sum of 100 squares = {value}");
    stop.graceful();
    running.join().expect("worker thread");

    // The picture of a small graph (DOT for Graphviz, or SVG drawn here).
    let g = Graph::new();
    let total = add::delayed(&g, square::delayed(&g, 2), square::delayed(&g, 3));
    let _ = total;
    let dot = g.to_dot();
    assert!(dot.contains("->"));
    println!("{dot}");
}
