//! Arrays on a broker's workers (issue 17, item 4): two real worker processes on SQLite and
//! on Redis reduce the same random array, under two chunkings, to the same bits as `Inline`;
//! NaN and infinities come back as themselves; a closure step is refused before anything is
//! sent, naming the step.
//!
//! The workers are this test binary started again with `LOVAGE_COLLECTIONS_TEST_ROLE` set (so they know
//! its tasks), hence `harness = false`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::path::Path;

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
    common::arrays::random_dots_and_broadcasts(Broker(&client), 9, 6);
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

/// Node-backed blocks of 128 KiB on two data-plane workers: `xᵀ·(x + row)` of 16 blocks by
/// 16 (64 block products, their sums, transposes and broadcast sums: some 20 MiB of block
/// values passed between tasks) gives Inline's bits, and no block enters the broker: the
/// result store (and the joins the workers record inputs in) holds references only, every
/// value under the 64 KiB threshold, a few hundred KiB in all.
fn blocks_stay_with_their_workers(url: &str, file: &Path) {
    let _a = common::data_worker(url, "coll-data-a");
    let _b = common::data_worker(url, "coll-data-b");
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let g = Graph::new();
    let x = Array::random(&g, &[512, 512], &[128, 128], 21)
        .unwrap()
        .materialize();
    let row = Array::random(&g, &[512], &[128], 22).unwrap();
    let y = x.t().dot(&x.add(&row).unwrap()).unwrap();
    let on_broker = compute(&g, Broker(&client), (y.sum(), y.max(), y.argmin())).unwrap();
    let inline = compute(&g, Inline, (y.sum(), y.max(), y.argmin())).unwrap();
    assert_eq!(
        (on_broker.0.to_bits(), on_broker.1.to_bits(), on_broker.2),
        (inline.0.to_bits(), inline.1.to_bits(), inline.2)
    );
    // What the broker stored: the results and the joins' input slots.
    let db = rusqlite::Connection::open(file).unwrap();
    let (mut largest, mut total) = (0u64, 0u64);
    for table in ["results", "joins"] {
        let (max, sum): (Option<i64>, Option<i64>) = db
            .query_row(
                &format!("SELECT max(length(value)), sum(length(value)) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        largest = largest.max(max.unwrap_or(0) as u64);
        total += sum.unwrap_or(0) as u64;
    }
    assert!(
        largest < 64 << 10,
        "a value of {largest} bytes is in the broker"
    );
    assert!(total < 2 << 20, "{total} bytes of values are in the broker");
    // The whole product (its blocks kept by the workers and fetched by this process), as
    // Inline's.
    let whole = y.compute(Broker(&client)).unwrap();
    let want = y.compute(Inline).unwrap();
    assert!(whole
        .iter()
        .zip(want.iter())
        .all(|(p, q)| p.to_bits() == q.to_bits()));
}

fn main() {
    if common::serve_role() {
        return;
    }
    let args = Arguments::from_args();
    let mut trials = on_brokers(&["sqlite", "redis"], "array_reductions_match_inline", |f| {
        same_on_broker(&f.url)
    });
    trials.extend(on_brokers(
        &["sqlite"],
        "node_backed_blocks_stay_with_their_workers",
        |f| blocks_stay_with_their_workers(&f.url, &f.sqlite_path().unwrap()),
    ));
    libtest_mimic::run(&args, trials).exit();
}
