//! Arrays against ndarray evaluated serially: random shapes and chunkings (ragged last
//! blocks), NaN and infinities in reductions, one random array under two chunkings, on the
//! inline and the thread-pool schedulers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use common::pictures::{assert_one_rect_per_box, box_count};
use std::sync::OnceLock;

use lovage_collections::array::{random_at, random_fill, Array, Op};
use lovage_collections::compute;
use lovage_graph::{Graph, Inline, Scheduler, Threads};
use lovage_pool::ThreadPool;
use lovage_testkit::grouped_boxes;
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use proptest::prelude::*;

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

fn schedulers() -> [Scheduler<'static>; 2] {
    [Inline, Threads(pool())]
}

/// Equal, NaN equal to NaN, within a relative tolerance for sums.
fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

/// Same shape and every value `close`.
fn same(a: &ArrayD<f64>, b: &ArrayD<f64>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| close(*x, *y))
}

fn numpy_min(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(f64::INFINITY, |m, &x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.min(x)
        }
    })
}

fn numpy_max(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(f64::NEG_INFINITY, |m, &x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    })
}

fn numpy_argmax(a: &ArrayD<f64>) -> usize {
    if let Some(i) = a.iter().position(|x| x.is_nan()) {
        return i;
    }
    let (mut best, mut at) = (f64::NEG_INFINITY, 0);
    for (i, &x) in a.iter().enumerate() {
        if x > best || i == 0 {
            (best, at) = (x, i);
        }
    }
    at
}

fn numpy_var(a: &ArrayD<f64>) -> f64 {
    let n = a.len() as f64;
    let m = a.sum() / n;
    a.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n
}

/// A shape of 1 to 3 axes, chunk lengths for it, and values: mostly finite, some NaN/±inf.
fn case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<f64>)> {
    prop::collection::vec(1usize..7, 1..=3).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        let chunks = shape.iter().map(|&s| 1..=s).collect::<Vec<_>>();
        let value = prop_oneof![
            20 => -100.0f64..100.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
        ];
        (Just(shape), chunks, prop::collection::vec(value, n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn reductions_match_serial_with_nan_and_inf((shape, chunks, values) in case(), finite in any::<bool>()) {
        let values: Vec<f64> = if finite {
            values.iter().map(|x| if x.is_finite() { *x } else { 1.5 }).collect()
        } else {
            values
        };
        let a = ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap();
        for s in schedulers() {
            let g = Graph::new();
            let x = Array::from_ndarray(&g, &a, &chunks).unwrap();
            prop_assert!(same(&x.compute(s).unwrap(), &a));
            let (sum, mean, var, std, min, max) =
                compute(&g, s, (x.sum(), x.mean(), x.var(), x.std(), x.min(), x.max())).unwrap();
            prop_assert!(close(sum, a.sum()), "sum {} vs {}", sum, a.sum());
            prop_assert!(close(mean, a.sum() / a.len() as f64), "mean {}", mean);
            prop_assert!(close(var, numpy_var(&a)), "var {} vs {}", var, numpy_var(&a));
            prop_assert!(close(std, numpy_var(&a).sqrt()));
            prop_assert!(close(min, numpy_min(&a)) && close(max, numpy_max(&a)));
            prop_assert_eq!(compute(&g, s, x.argmax()).unwrap(), numpy_argmax(&a));
            // The same from a lazy array with these values.
            let flat = a.as_slice().unwrap().to_vec();
            let shape2 = shape.clone();
            let lazy = Array::from_fn(&g, &shape, &chunks, move |i| {
                flat[lovage_collections::array::flat_index(i, &shape2)]
            }).unwrap();
            let (lsum, lvar, lmax) = compute(&g, s, (lazy.sum(), lazy.var(), lazy.max())).unwrap();
            prop_assert!(close(lsum, sum) && close(lvar, var) && close(lmax, max));
            prop_assert_eq!(compute(&g, s, lazy.argmax()).unwrap(), numpy_argmax(&a));
            if shape.len() >= 2 {
                for axis in 0..shape.len() {
                    let got = x.sum_axis(axis).unwrap().compute(s).unwrap();
                    let want = a.sum_axis(Axis(axis));
                    prop_assert!(got.iter().zip(want.iter()).all(|(p, q)| close(*p, *q)), "sum_axis {}", axis);
                    let got = x.max_axis(axis).unwrap().compute(s).unwrap();
                    let want = a.map_axis(Axis(axis), |l| numpy_max(&l.to_owned().into_dyn()));
                    prop_assert!(got.iter().zip(want.iter()).all(|(p, q)| close(*p, *q)), "max_axis {}", axis);
                    let got = lazy.var_axis(axis).unwrap().compute(s).unwrap();
                    let want = a.map_axis(Axis(axis), |l| numpy_var(&l.to_owned().into_dyn()));
                    prop_assert!(got.iter().zip(want.iter()).all(|(p, q)| close(*p, *q)), "var_axis {}", axis);
                    let got = x.argmax_axis(axis).unwrap().compute(s).unwrap();
                    let want = a.map_axis(Axis(axis), |l| numpy_argmax(&l.to_owned().into_dyn()) as f64);
                    prop_assert!(same(&got, &want), "argmax_axis {}", axis);
                }
            }
        }
    }

    #[test]
    fn slicing_rechunking_and_element_wise_steps_match_ndarray(
        (shape, chunks, values) in case(),
        cuts in prop::collection::vec((0usize..7, 0usize..7), 3),
        rechunk in prop::collection::vec(1usize..5, 3),
    ) {
        let a = ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
            .mapv(|x| if x.is_finite() { x } else { 0.25 });
        let ranges: Vec<std::ops::Range<usize>> = shape.iter().zip(&cuts)
            .map(|(&n, &(p, q))| { let (p, q) = (p % (n + 1), q % (n + 1)); p.min(q)..p.max(q) })
            .collect();
        let g = Graph::new();
        let nd = shape.len();
        for x in [Array::from_ndarray(&g, &a, &chunks).unwrap(), {
            let flat = a.as_slice().unwrap().to_vec();
            let s2 = shape.clone();
            Array::from_fn(&g, &shape, &chunks, move |i| flat[lovage_collections::array::flat_index(i, &s2)]).unwrap()
        }] {
            let sliced = x.slice(&ranges).unwrap();
            let want = a.slice_each_axis(|ax| Slice::from(ranges[ax.axis.index()].clone())).to_owned();
            for s in schedulers() {
                prop_assert_eq!(sliced.compute(s).unwrap(), want.clone());
                let re = x.rechunk(&rechunk[..nd]).unwrap();
                prop_assert_eq!(re.compute(s).unwrap(), a.clone());
                let y = x.map(|v| v * 2.0 + 1.0).add(&re).unwrap().map_blocks(|b| b.mapv(|v| v - 1.0));
                prop_assert!(same(&y.compute(s).unwrap(), &a.mapv(|v| v * 3.0)));
                prop_assert_eq!(x.t().compute(s).unwrap(), a.t().to_owned());
            }
        }
    }
}

#[test]
fn the_vectorized_fill_gives_random_at_bits_exactly() {
    // Lengths around the vector widths, and starts that wrap the counter.
    for (seed, first) in [(0u64, 0u64), (12345, 999_999_937), (u64::MAX, u64::MAX - 5)] {
        for len in [0usize, 1, 7, 8, 9, 63, 4096] {
            let mut out = vec![f64::NAN; len];
            random_fill(seed, first, &mut out);
            for (k, x) in out.iter().enumerate() {
                let want = random_at(seed, first.wrapping_add(k as u64));
                assert_eq!(
                    x.to_bits(),
                    want.to_bits(),
                    "seed {seed} first {first} k {k}"
                );
            }
        }
    }
}

#[test]
fn a_random_array_is_the_same_under_any_chunking_and_scheduler() {
    let g = Graph::new();
    let a = Array::random(&g, &[1000], &[1000], 42)
        .unwrap()
        .compute(Inline)
        .unwrap();
    let b = Array::random(&g, &[1000], &[37], 42)
        .unwrap()
        .compute(Threads(pool()))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a[[999]],
        random_at(lovage_collections::array::seed_of(42), 999)
    );
    assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
    let other = Array::random(&g, &[1000], &[1000], 43)
        .unwrap()
        .compute(Inline)
        .unwrap();
    assert_ne!(a, other);
    let c = Array::random(&g, &[30, 40], &[7, 9], 5)
        .unwrap()
        .compute(Inline)
        .unwrap();
    let d = Array::random(&g, &[30, 40], &[30, 1], 5)
        .unwrap()
        .compute(Threads(pool()))
        .unwrap();
    assert_eq!(c, d);
    // Streamed (never materialised) and materialised reductions agree exactly.
    let x = Array::random(&g, &[100_003], &[10_000], 9).unwrap();
    let (m1, m2) = compute(&g, Threads(pool()), (x.mean(), x.materialize().mean())).unwrap();
    assert_eq!(m1, m2);
    assert!((m1 - 0.5).abs() < 0.01);
}

#[test]
fn empty_arrays_answer_as_numpy_does() {
    let g = Graph::new();
    let x = Array::zeros(&g, &[0], &[4]).unwrap();
    assert_eq!(compute(&g, Inline, x.sum()).unwrap(), 0.0);
    assert!(compute(&g, Inline, x.mean()).unwrap().is_nan());
    let err = compute(&g, Inline, x.max()).unwrap_err();
    assert!(err.to_string().contains("max of an empty array"), "{err}");
    assert!(compute(&g, Inline, x.argmax()).is_err());
    assert_eq!(x.compute(Inline).unwrap().len(), 0);
}

#[test]
fn bad_shapes_and_axes_are_clear_errors() {
    let g = Graph::new();
    let e = Array::zeros(&g, &[4, 4], &[2]).unwrap_err();
    assert!(e.to_string().contains("one chunk length per axis"), "{e}");
    let e = Array::zeros(&g, &[4], &[0]).unwrap_err();
    assert!(e.to_string().contains("chunk length 0 on axis 0"), "{e}");
    let a = Array::ones(&g, &[4, 4], &[2, 2]).unwrap();
    let b = Array::ones(&g, &[4, 5], &[2, 2]).unwrap();
    assert!(a
        .add(&b)
        .unwrap_err()
        .to_string()
        .contains("[4, 4] and [4, 5]"));
    assert!(a
        .slice(&[0..5, 0..1])
        .unwrap_err()
        .to_string()
        .contains("out of bounds on axis 0"));
    assert!(a.sum_axis(2).is_err());
    let bad = a.map_blocks(|b| b.slice_axis(Axis(0), Slice::from(0..1)).to_owned());
    let e = compute(&g, Inline, bad.sum()).unwrap_err();
    assert!(
        e.to_string()
            .contains("map_blocks: block 0 has shape [2, 2]"),
        "{e}"
    );
}

#[test]
fn to_npy_writes_numpys_format() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let x = Array::from_fn(&g, &[5, 3], &[2, 2], |i| (i[0] * 10 + i[1]) as f64).unwrap();
    let path = compute(&g, Threads(pool()), x.to_npy(dir.path().join("x.npy"))).unwrap();
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f8', 'fortran_order': False, 'shape': (5, 3)"),
        "{header}"
    );
    let values: Vec<f64> = bytes[10 + hlen..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f64> = (0..5)
        .flat_map(|r| (0..3).map(move |c| (r * 10 + c) as f64))
        .collect();
    assert_eq!(values, want);
}

/// How a test operand is built: node-backed (`from_ndarray`), a closure (`from_fn`), or
/// data (`random`, whose values are `random_at`).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Blocks,
    Closure,
    Random,
}

/// An operand of `shape` in blocks of `chunks` built as `kind`, and its values.
fn operand<'g>(
    g: &'g Graph,
    shape: &[usize],
    chunks: &[usize],
    kind: Kind,
    salt: u64,
) -> (Array<'g>, ArrayD<f64>) {
    let seed = lovage_collections::array::seed_of(salt);
    let values = ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let flat =
            lovage_collections::array::flat_index(ndarray::Dimension::slice(&i), shape) as u64;
        match kind {
            Kind::Random => random_at(seed, flat),
            _ => ((flat + salt) as f64 * 0.37).sin() * 10.0,
        }
    });
    let x = match kind {
        Kind::Blocks => Array::from_ndarray(g, &values, chunks).unwrap(),
        Kind::Closure => {
            let v = values.clone();
            Array::from_fn(g, shape, chunks, move |i| v[i]).unwrap()
        }
        Kind::Random => Array::random(g, shape, chunks, salt).unwrap(),
    };
    (x, values)
}

/// An operand shape that broadcasts to `out`: its last `keep` axes, those marked in `ones`
/// of length 1; and its chunks from `seeds`.
fn broadcast_operand(
    out: &[usize],
    keep: usize,
    ones: &[bool],
    seeds: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let k = keep % out.len() + 1;
    let shape: Vec<usize> = out[out.len() - k..]
        .iter()
        .zip(ones)
        .map(|(&n, &one)| if one { 1 } else { n })
        .collect();
    let chunks = shape.iter().zip(seeds).map(|(&n, &c)| c % n + 1).collect();
    (shape, chunks)
}

const KINDS: [Kind; 3] = [Kind::Blocks, Kind::Closure, Kind::Random];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn broadcasting_matches_ndarray(
        out in prop::collection::vec(1usize..6, 1..=3),
        keep in (0usize..3, 0usize..3),
        ones in (prop::collection::vec(any::<bool>(), 3), prop::collection::vec(any::<bool>(), 3)),
        seeds in (prop::collection::vec(0usize..6, 3), prop::collection::vec(0usize..6, 3)),
        kinds in (0usize..3, 0usize..3),
        op in 0usize..4,
    ) {
        let (sa, ca) = broadcast_operand(&out, keep.0, &ones.0, &seeds.0);
        let (sb, cb) = broadcast_operand(&out, keep.1, &ones.1, &seeds.1);
        let g = Graph::new();
        let (x, a) = operand(&g, &sa, &ca, KINDS[kinds.0], 1);
        let (y, b) = operand(&g, &sb, &cb, KINDS[kinds.1], 2);
        let ops = [Op::Add, Op::Sub, Op::Mul, Op::Div];
        // ndarray's own broadcasting (co-broadcasting of both operands).
        let want = match op { 0 => &a + &b, 1 => &a - &b, 2 => &a * &b, _ => &a / &b };
        let want_rev = match op { 0 => &b + &a, 1 => &b - &a, 2 => &b * &a, _ => &b / &a };
        let xy = x.zip(ops[op], &y).unwrap();
        let yx = y.zip(ops[op], &x).unwrap();
        prop_assert_eq!(xy.shape(), want.shape());
        for s in schedulers() {
            prop_assert!(same(&xy.compute(s).unwrap(), &want), "{:?} {:?} {:?}", sa, sb, s);
            prop_assert!(same(&yx.compute(s).unwrap(), &want_rev));
            let (total, top) = compute(&g, s, (xy.sum(), xy.max())).unwrap();
            prop_assert!(close(total, want.sum()), "{} vs {}", total, want.sum());
            prop_assert!(close(top, numpy_max(&want)));
        }
        // The same through a closure (zip_with) and on a rechunked result.
        let z = x.zip_with(&y, |p, q| p * 2.0 - q).unwrap().rechunk(&vec![2; want.ndim()]).unwrap();
        let want_z = ndarray::Zip::from(&a.broadcast(IxDyn(want.shape())).unwrap())
            .and(&b.broadcast(IxDyn(want.shape())).unwrap())
            .map_collect(|p, q| p * 2.0 - q);
        prop_assert!(same(&z.compute(Inline).unwrap(), &want_z));
    }

    #[test]
    fn dot_by_blocks_matches_ndarray(
        dims in (1usize..8, 1usize..8, 1usize..8),
        chunks in prop::collection::vec(1usize..8, 4),
        form in 0usize..3,
        kinds in (0usize..3, 0usize..3),
    ) {
        let (n, k, m) = dims;
        let c = |i: usize, len: usize| chunks[i] % len + 1;
        let g = Graph::new();
        // Left (n, k) or (k,); right (k, m) or (k,): each with its own chunks, so the inner
        // ones mostly differ and the right operand is rechunked.
        let (ls, lc) = if form == 2 { (vec![k], vec![c(1, k)]) } else { (vec![n, k], vec![c(0, n), c(1, k)]) };
        let (rs, rc) = if form == 1 { (vec![k], vec![c(2, k)]) } else { (vec![k, m], vec![c(2, k), c(3, m)]) };
        let (x, a) = operand(&g, &ls, &lc, KINDS[kinds.0], 3);
        let (y, b) = operand(&g, &rs, &rc, KINDS[kinds.1], 4);
        let want: ArrayD<f64> = match form {
            0 => a.clone().into_dimensionality::<ndarray::Ix2>().unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix2>().unwrap()).into_dyn(),
            1 => a.clone().into_dimensionality::<ndarray::Ix2>().unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix1>().unwrap()).into_dyn(),
            _ => a.clone().into_dimensionality::<ndarray::Ix1>().unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix2>().unwrap()).into_dyn(),
        };
        let xy = x.dot(&y).unwrap();
        prop_assert_eq!(xy.shape(), want.shape());
        let mm = x.matmul(&y).unwrap();
        prop_assert_eq!(mm.shape(), want.shape());
        for s in schedulers() {
            prop_assert!(same(&xy.compute(s).unwrap(), &want), "{:?}·{:?} on {:?}", ls, rs, s);
            prop_assert!(close(compute(&g, s, xy.sum()).unwrap(), want.sum()));
        }
    }
}

#[test]
fn broadcasting_named_cases_and_errors() {
    let g = Graph::new();
    let (x, a) = operand(&g, &[5, 4], &[2, 3], Kind::Blocks, 7);
    let (row, r) = operand(&g, &[4], &[4], Kind::Random, 8);
    let (col, c) = operand(&g, &[5, 1], &[3, 1], Kind::Random, 9);
    let (top, t) = operand(&g, &[1, 4], &[1, 1], Kind::Blocks, 10);
    // (n, m) + (m,): the row added to every row.
    let got = x.add(&row).unwrap().compute(Threads(pool())).unwrap();
    assert!(same(&got, &(&a + &r)));
    // The larger operand keeps its chunks, on either side; the row is rechunked.
    assert_eq!(row.add(&x).unwrap().chunks(), x.chunks());
    assert_eq!(x.sub(&row).unwrap().chunks(), x.chunks());
    let got = row.sub(&x).unwrap().compute(Inline).unwrap();
    assert!(same(&got, &(&r - &a)));
    // (n, 1) + (1, m): an outer sum, both operands broadcast; data stays data.
    let outer = col.add(&row).unwrap();
    assert_eq!(outer.shape(), &[5, 4]);
    assert!(same(&outer.compute(Inline).unwrap(), &(&c + &r)));
    let got = col.mul(&top).unwrap().compute(Inline).unwrap();
    assert!(same(&got, &(&c * &t)));
    // Shapes that do not broadcast: an input error naming both.
    let (bad, _) = operand(&g, &[5], &[2], Kind::Random, 11);
    let e = x.add(&bad).unwrap_err().to_string();
    assert!(
        e.contains("[5, 4] and [5]") && e.contains("do not broadcast"),
        "{e}"
    );
    let e = col
        .sub(&Array::ones(&g, &[3, 2], &[1, 1]).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("[5, 1] and [3, 2]"), "{e}");
}

#[test]
fn dot_errors_and_inner() {
    let g = Graph::new();
    let (x, _) = operand(&g, &[4, 3], &[2, 2], Kind::Blocks, 1);
    let (y, _) = operand(&g, &[4, 2], &[2, 2], Kind::Blocks, 2);
    let e = x.dot(&y).unwrap_err().to_string();
    assert!(e.contains("[4, 3] and [4, 2] are not aligned"), "{e}");
    let (v, a) = operand(&g, &[6], &[4], Kind::Random, 3);
    let (w, b) = operand(&g, &[6], &[5], Kind::Blocks, 4);
    let e = v.dot(&w).unwrap_err().to_string();
    assert!(e.contains("use inner"), "{e}");
    let got = compute(&g, Inline, v.inner(&w).unwrap()).unwrap();
    let want = a
        .into_dimensionality::<ndarray::Ix1>()
        .unwrap()
        .dot(&b.into_dimensionality::<ndarray::Ix1>().unwrap());
    assert!(close(got, want), "{got} vs {want}");
    let (cube, _) = operand(&g, &[2, 2, 2], &[1, 1, 1], Kind::Blocks, 5);
    assert!(cube
        .dot(&x)
        .unwrap_err()
        .to_string()
        .contains("1-D and 2-D"));
}

#[test]
fn to_raw_and_from_npy_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let (x, a) = operand(&g, &[7, 5], &[3, 2], Kind::Random, 12);
    let (npy, raw) = compute(
        &g,
        Threads(pool()),
        (
            x.to_npy(dir.path().join("x.npy")),
            x.to_raw(dir.path().join("x.f64")),
        ),
    )
    .unwrap();
    // Raw: the values only, row-major little-endian.
    let bytes = std::fs::read(&raw).unwrap();
    let values: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, a.iter().copied().collect::<Vec<_>>());
    // Read back in other chunks, on either scheduler: the same bits.
    for s in schedulers() {
        let y = Array::from_npy(&g, &npy, &[2, 4]).unwrap();
        assert_eq!(y.shape(), &[7, 5]);
        assert_eq!(y.compute(s).unwrap(), a);
        let (m1, m2) = compute(&g, s, (y.mean(), x.mean())).unwrap();
        assert!(close(m1, m2));
    }
    // The raw file read back, given its shape; one of the wrong shape is refused.
    let r = Array::from_raw(&g, &raw, &[7, 5], &[3, 3]).unwrap();
    assert_eq!(r.compute(Threads(pool())).unwrap(), a);
    let e = Array::from_raw(&g, &raw, &[7, 6], &[3, 3]).unwrap_err();
    assert!(
        e.to_string()
            .contains("280 bytes, but an array of shape [7, 6] needs 336"),
        "{e}"
    );
    // A node-backed array writes its blocks too.
    let z = Array::from_ndarray(&g, &a, &[4, 4]).unwrap().t();
    let p = compute(&g, Inline, z.to_npy(dir.path().join("z.npy"))).unwrap();
    let back = Array::from_npy(&g, &p, &[5, 7])
        .unwrap()
        .compute(Inline)
        .unwrap();
    assert_eq!(back, a.t().to_owned());
    // What is not read is said, naming the file.
    let e = Array::from_npy(&g, &raw, &[2]).unwrap_err().to_string();
    assert!(e.contains("x.f64") && e.contains("not a .npy file"), "{e}");
    let mut f4 = std::fs::read(&npy).unwrap();
    let at = f4.windows(3).position(|w| w == b"<f8").unwrap();
    f4[at + 2] = b'4';
    std::fs::write(dir.path().join("f4.npy"), &f4).unwrap();
    let e = Array::from_npy(&g, dir.path().join("f4.npy"), &[2, 2]).unwrap_err();
    assert!(e.to_string().contains("'<f4'"), "{e}");
    let e = Array::from_npy(&g, dir.path().join("none.npy"), &[2]).unwrap_err();
    assert!(e.to_string().contains("none.npy"), "{e}");
}

#[test]
fn an_array_draws_its_graph_grouped_by_operation() {
    let g = Graph::new();
    let a = Array::random(&g, &[40, 40], &[10, 10], 1)
        .unwrap()
        .materialize();
    let b = a.map(|x| x * 2.0).rechunk(&[20, 20]).unwrap();
    let c = b.dot(&b.t()).unwrap();
    let dot = c.to_dot().unwrap();
    let boxes = grouped_boxes(&dot);
    let count = |op: &str| box_count(&boxes, op);
    // The 16 materialised blocks of `a` are one box, and so are the map's 16.
    assert_eq!(count("lovage.array.generate"), Some(16), "{dot}");
    assert_eq!(count("array-map"), Some(16), "{dot}");
    // 2×2 blocks of 20 after the rechunk: each of the 2×2 output blocks sums 2 products.
    assert_eq!(count("lovage.array.regrid"), Some(4), "{dot}");
    assert_eq!(count("lovage.array.matmul"), Some(2 * 2 * 2), "{dot}");
    assert_eq!(count("lovage.array.add_blocks"), Some(2 * 2), "{dot}");
    assert!(
        dot.contains("\"lovage.array.regrid\" -> \"lovage.array.matmul\" [label=\"8\"]"),
        "{dot}"
    );
    assert!(
        boxes.len() < 16,
        "one box per operation, not per node: {dot}"
    );
    let svg = c.to_svg().unwrap();
    assert_one_rect_per_box(&svg, &boxes);
    // The picture still computes: drawing it added nodes but changed no value.
    assert_eq!(c.compute(Inline).unwrap().shape(), &[40, 40]);
}
