//! Figures for node-backed arrays (docs/benchmarks.md, "Node-backed arrays"): the block codec
//! (raw little-endian bytes in base64, against a list of floats), `dot` by blocks against
//! ndarray's own `dot`, and a node-backed step on threads and on a process pool (where every
//! block crosses a pipe as task data).
//!
//! Run: `cargo run --release -p lovage-collections --example array_blocks`

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)] // a measurement

use std::time::Instant;

use lovage_collections::array::{Array, Block};
use lovage_collections::compute;
use lovage_core::Codec;
use lovage_graph::{Graph, Inline, Processes, Threads};
use ndarray::{ArrayD, Ix2, IxDyn};

fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn main() {
    lovage_pool::child_main();
    let threads = lovage_pool::ThreadPool::new(2);
    let procs = lovage_pool::ProcessPool::new(2);
    // 1. Block codec: 1e6 values (8 MB).
    let a = ArrayD::from_shape_fn(IxDyn(&[1000, 1000]), |i| {
        (i[0] * 1000 + i[1]) as f64 * 0.001
    });
    let b = Block::new(a.clone());
    for codec in [Codec::Msgpack, Codec::Json] {
        let (te, enc) = best(5, || codec.encode(&b, "b").unwrap());
        let (td, back) = best(5, || codec.decode::<Block>(&enc, "b").unwrap());
        assert_eq!(back.shape(), b.shape());
        let floats = match codec {
            Codec::Msgpack => lovage_core::Codec::Msgpack
                .encode(&a.iter().copied().collect::<Vec<f64>>(), "v")
                .unwrap()
                .len(),
            Codec::Json => serde_json::to_vec(&a.iter().copied().collect::<Vec<f64>>())
                .unwrap()
                .len(),
        };
        println!("block codec {codec}: 8.0 MB of values -> {} bytes (a list of floats: {floats}); encode {:.1} ms ({:.2} GB/s), decode {:.1} ms ({:.2} GB/s)",
            enc.len(), te * 1e3, 8e6 / te / 1e9, td * 1e3, 8e6 / td / 1e9);
    }
    // 2. dot by blocks: 2000x2000 . 2000x2000 in blocks of 500, Threads(2) vs ndarray's dot.
    let n = 2000;
    let x2 = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| ((i[0] * n + i[1]) as f64 * 0.37).sin());
    let y2 = x2.t().to_owned();
    let (tnd, want) = best(3, || {
        x2.clone()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .dot(&y2.clone().into_dimensionality::<Ix2>().unwrap())
    });
    for (name, sched) in [
        ("Inline", Inline),
        ("Threads(2)", Threads(&threads)),
        ("Processes(2)", Processes(&procs)),
    ] {
        let (t, got) = best(3, || {
            let g = Graph::new();
            let x = Array::from_ndarray(&g, &x2, &[500, 500]).unwrap();
            let y = Array::from_ndarray(&g, &y2, &[500, 500]).unwrap();
            x.dot(&y).unwrap().compute(sched).unwrap()
        });
        let err = got
            .iter()
            .zip(want.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        println!("dot 2000x2000 in blocks of 500 on {name}: {:.3} s (ndarray's dot, one thread: {:.3} s); max |diff| {err:e}", t, tnd);
    }
    // 3. A node-backed array's mean: 4000x4000 (128 MB) in blocks of 1000x1000 (8 MB).
    let big = ArrayD::from_shape_fn(IxDyn(&[4000, 4000]), |i| (i[0] + i[1]) as f64);
    for (name, sched) in [
        ("Threads(2)", Threads(&threads)),
        ("Processes(2)", Processes(&procs)),
    ] {
        let (t, m) = best(3, || {
            let g = Graph::new();
            let x = Array::from_ndarray(&g, &big, &[1000, 1000]).unwrap();
            compute(&g, sched, x.add(&x.t()).unwrap().mean()).unwrap()
        });
        println!("(x + x.T).mean() of a 4000x4000 from_ndarray in blocks of 1000x1000 on {name}: {:.3} s (mean {m})", t);
    }
}
