//! Arrays on a broker's workers (issue 17, item 4): two real worker processes on SQLite and
//! on Redis reduce the same random array, under two chunkings, to the same bits as `Inline`;
//! NaN and infinities come back as themselves; a closure step is refused before anything is
//! sent, naming the step.
//!
//! The workers are this test binary started again with `COLL_BROKER_ROLE` set (so they know
//! its tasks), hence `harness = false`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use libtest_mimic::Arguments;
use lovage_broker::{connect, App};
use lovage_collections::array::{Array, Func, Op};
use lovage_collections::bag::Bag;
use lovage_collections::{compute, Error};
use lovage_graph::{Broker, Graph, Inline, Scheduler};
use lovage_testkit::on_brokers;

/// Sum, mean, var, std, min, max (bits) and argmax.
fn stats(g: &Graph, x: &Array<'_>, sched: Scheduler<'_>) -> ([u64; 6], usize) {
    let (s, m, v, sd, lo, hi) = compute(
        g,
        sched,
        (x.sum(), x.mean(), x.var(), x.std(), x.min(), x.max()),
    )
    .unwrap();
    let at = compute(g, sched, x.argmax()).unwrap();
    ([s, m, v, sd, lo, hi].map(f64::to_bits), at)
}

/// The test on one broker: two workers, the same arrays as `Inline`.
fn same_on_broker(url: &str) {
    let _a = common::worker(url, "coll-a");
    let _b = common::worker(url, "coll-b");
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    for chunks in [[200usize, 16], [333, 37]] {
        let g = Graph::new();
        let x = Array::random(&g, &[1000, 37], &chunks, 7).unwrap();
        assert_eq!(
            stats(&g, &x, Broker(&client)),
            stats(&g, &x, Inline),
            "chunks {chunks:?}"
        );
        let y = x
            .scalar(Op::Sub, 0.5)
            .apply(Func::Abs)
            .mul(&x)
            .unwrap()
            .slice(&[5..905, 1..37])
            .unwrap();
        assert_eq!(
            stats(&g, &y, Broker(&client)),
            stats(&g, &y, Inline),
            "derived, chunks {chunks:?}"
        );
    }
    // NaN and infinities travel as themselves (JSON has neither).
    let g = Graph::new();
    let nan = Array::full(&g, &[10], &[3], f64::NAN).unwrap();
    let inf = Array::full(&g, &[10], &[3], f64::INFINITY).unwrap();
    let (m, hi, lo) = compute(&g, Broker(&client), (nan.mean(), inf.max(), inf.min())).unwrap();
    assert!(m.is_nan());
    assert_eq!((hi, lo), (f64::INFINITY, f64::INFINITY));
    // A task error comes back named, as locally.
    let empty = Array::zeros(&g, &[0], &[4]).unwrap();
    let err = compute(&g, Broker(&client), empty.argmax()).unwrap_err();
    assert!(
        err.to_string().contains("argmax of an empty array"),
        "{err}"
    );
    // Node-backed arrays: blocks travel between the workers as task data; the same bits as
    // Inline (the `.npy` file is written and read by the workers, on this host).
    let dir = tempfile::tempdir().unwrap();
    common::arrays::node_backed(Inline, dir.path()).assert_same_bits(
        &common::arrays::node_backed(Broker(&client), dir.path()),
        "node-backed arrays on the broker",
    );
    // Closure steps are refused before anything is sent, naming the step.
    let b = Bag::from_iter(&g, 0..10i64, 2);
    let err = compute(&g, Broker(&client), b.count()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { scheduler: "Broker", op } if op.starts_with("bag")),
        "{err:?}"
    );
    let err = compute(&g, Broker(&client), inf.map(|v| -v).max()).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            scheduler: "Broker",
            op: "array-map".into()
        }
    );
}

fn main() {
    if common::serve_role() {
        return;
    }
    let args = Arguments::from_args();
    let trials = on_brokers(&["sqlite", "redis"], "array_reductions_match_inline", |f| {
        same_on_broker(&f.url)
    });
    libtest_mimic::run(&args, trials).exit();
}
