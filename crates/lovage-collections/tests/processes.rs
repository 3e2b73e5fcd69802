//! Arrays on a process pool: an array built from data (random, full, scalar/zip/apply steps,
//! slices) reduces there to the same bits as on `Inline` and `Threads`; a collection with a
//! closure step is refused before anything runs, naming the step.
//! Node-backed arrays (blocks as task data) give the same bits there too.
//! (Its own `main`: a process pool re-runs this executable as its children.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use lovage_collections::array::{Array, Func, Op};
use lovage_collections::bag::Bag;
use lovage_collections::{compute, Error};
use lovage_graph::{Graph, Inline, Processes, Scheduler, Threads};
use lovage_pool::{ProcessPool, ThreadPool};

/// Sum, mean, var, std, min, max, argmax and argmin of `x`, in one computation.
type Stats = (f64, f64, f64, f64, f64, f64, usize, usize);

fn stats(g: &Graph, x: &Array<'_>, sched: Scheduler<'_>) -> Stats {
    let (s, m, v, sd, lo, hi) = compute(
        g,
        sched,
        (x.sum(), x.mean(), x.var(), x.std(), x.min(), x.max()),
    )
    .unwrap();
    let (amax, amin) = compute(g, sched, (x.argmax(), x.argmin())).unwrap();
    (s, m, v, sd, lo, hi, amax, amin)
}

/// The same numbers, bit for bit (NaN equal to NaN).
fn same_bits(a: Stats, b: Stats, what: &str) {
    let fa = [a.0, a.1, a.2, a.3, a.4, a.5];
    let fb = [b.0, b.1, b.2, b.3, b.4, b.5];
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: {a:?} vs {b:?}");
    }
    assert_eq!((a.6, a.7), (b.6, b.7), "{what}: {a:?} vs {b:?}");
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn main() {
    lovage_pool::child_main();
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        libtest_mimic::Trial::test("data_arrays_reduce_to_the_same_bits", || {
            data_arrays();
            Ok(())
        }),
        libtest_mimic::Trial::test("node_backed_arrays_give_the_same_bits", || {
            node_backed();
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Node-backed arrays (blocks travel as task data): the same bits as Inline and Threads, and
/// the values ndarray gives.
fn node_backed() {
    let procs = ProcessPool::new(2);
    let threads = ThreadPool::new(2);
    let dir = tempfile::tempdir().unwrap();
    let inline = common::arrays::node_backed(Inline, dir.path());
    inline.assert_same_bits(
        &common::arrays::node_backed(Threads(&threads), dir.path()),
        "node-backed, threads",
    );
    inline.assert_same_bits(
        &common::arrays::node_backed(Processes(&procs), dir.path()),
        "node-backed, processes",
    );
    // Random dots and broadcasts there, against ndarray.
    common::arrays::random_dots_and_broadcasts(Processes(&procs), 24, 5);
    let a = common::arrays::values();
    assert_eq!(inline.arrays[0], a);
    let col_sums = a.sum_axis(ndarray::Axis(0));
    assert!(inline.arrays[3]
        .iter()
        .zip(col_sums.iter())
        .all(|(p, q)| close(*p, *q)));
}

/// Arrays built from data and closure steps refused.
fn data_arrays() {
    let procs = ProcessPool::new(2);
    let threads = ThreadPool::new(2);

    // One random array under two chunkings, and a derived array, on every local scheduler.
    let mut by_chunks = Vec::new();
    for chunks in [[100usize, 10], [333, 37]] {
        let g = Graph::new();
        let x = Array::random(&g, &[1000, 37], &chunks, 42).unwrap();
        let inline = stats(&g, &x, Inline);
        same_bits(inline, stats(&g, &x, Threads(&threads)), "threads");
        same_bits(inline, stats(&g, &x, Processes(&procs)), "processes");
        // Data steps stay data: they run on the pool too.
        let y = Array::full(&g, &[1000, 37], &chunks, 3.0).unwrap();
        let z = x
            .scalar(Op::Mul, 2.0)
            .add(&y)
            .unwrap()
            .apply(Func::Sqrt)
            .scalar_left(Op::Sub, 1.0)
            .slice(&[10..990, 3..30])
            .unwrap()
            .rechunk(&[97, 5])
            .unwrap();
        let local = stats(&g, &z, Inline);
        same_bits(
            local,
            stats(&g, &z, Processes(&procs)),
            "derived, processes",
        );
        // Against the values themselves.
        let whole = x.compute(Inline).unwrap();
        let want = whole.mapv(|v| 1.0 - (2.0 * v + 3.0).sqrt());
        let want = want.slice(ndarray::s![10..990, 3..30]);
        assert!(close(local.1, want.mean().unwrap()), "{local:?}");
        by_chunks.push(inline);
    }
    // The same array whatever its chunks: extremes exact, sums to rounding.
    let (a, b) = (by_chunks[0], by_chunks[1]);
    assert_eq!((a.4, a.5, a.6, a.7), (b.4, b.5, b.6, b.7));
    assert!(
        close(a.0, b.0) && close(a.1, b.1) && close(a.2, b.2),
        "{a:?} {b:?}"
    );

    // NaN and infinities cross processes as themselves.
    let g = Graph::new();
    let nan = Array::full(&g, &[10], &[3], f64::NAN).unwrap();
    let inf = Array::full(&g, &[10], &[3], f64::INFINITY).unwrap();
    let (m, hi) = compute(&g, Processes(&procs), (nan.mean(), inf.max())).unwrap();
    assert!(m.is_nan());
    assert_eq!(hi, f64::INFINITY);
    let diff = compute(&g, Processes(&procs), inf.sub(&inf).unwrap().sum()).unwrap();
    assert!(diff.is_nan());
    // An empty array: max fails the task, naming it, as locally.
    let empty = Array::zeros(&g, &[0], &[4]).unwrap();
    let err = compute(&g, Processes(&procs), empty.max()).unwrap_err();
    assert!(err.to_string().contains("max of an empty array"), "{err}");
    assert!(compute(&g, Processes(&procs), empty.mean())
        .unwrap()
        .is_nan());

    // Closure steps are refused before anything runs, naming the step.
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i64, 2);
    let err = compute(&g, Processes(&procs), b.count()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { scheduler: "Processes", op } if op.starts_with("bag")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("cannot cross processes"), "{text}");
    let x = Array::ones(&g, &[4], &[2]).unwrap();
    let err = compute(&g, Processes(&procs), x.map(|v| v * 2.0).mean()).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            scheduler: "Processes",
            op: "array-map".into()
        }
    );
    assert!(
        err.to_string().starts_with("array-map runs a closure"),
        "{err}"
    );
    let err = compute(&g, Processes(&procs), x.map_blocks(|b| b.to_owned()).sum()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { op, .. } if op == "array-map-blocks"),
        "{err:?}"
    );
    // The whole array of a closure step is local-only, and says so.
    assert!(matches!(
        x.map(|v| v + 1.0).compute(Processes(&procs)),
        Err(Error::Unsupported {
            scheduler: "Processes",
            op,
        }) if op == "array-map"
    ));
    // The graph alone refuses the closure nodes too, naming one.
    let direct = g.compute(Processes(&procs), b.count()).err();
    let text = direct.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("is a closure"), "{text}");
}
