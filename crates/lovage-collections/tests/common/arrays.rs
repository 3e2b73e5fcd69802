//! Node-backed arrays (issue 17 item 4): the same workload on every scheduler, compared bit
//! for bit with `Inline` by the process-pool and broker tests.

use std::path::Path;

use lovage_collections::array::{Array, Func, Op};
use lovage_collections::compute;
use lovage_graph::{Graph, Scheduler};
use ndarray::{ArrayD, IxDyn};

/// What the workload answers: whole arrays and numbers.
#[derive(Debug)]
pub struct Answers {
    pub arrays: Vec<ArrayD<f64>>,
    pub numbers: Vec<f64>,
    pub indices: Vec<usize>,
}

impl Answers {
    /// Panics unless `other` has the same bits.
    pub fn assert_same_bits(&self, other: &Answers, what: &str) {
        assert_eq!(self.arrays.len(), other.arrays.len(), "{what}");
        for (k, (a, b)) in self.arrays.iter().zip(&other.arrays).enumerate() {
            assert_eq!(a.shape(), b.shape(), "{what}: array {k}");
            let same = a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{what}: array {k}: {a:?} vs {b:?}");
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&self.numbers),
            bits(&other.numbers),
            "{what}: {:?} vs {:?}",
            self.numbers,
            other.numbers
        );
        assert_eq!(self.indices, other.indices, "{what}");
    }
}

/// The values `from_ndarray` gets.
pub fn values() -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[40, 30]), |i| {
        ((i[0] * 30 + i[1]) as f64 * 0.37).sin()
    })
}

/// `from_ndarray`, `materialize`, broadcasting with a lazy operand, data steps on blocks,
/// axis reductions, `t()`, `dot`, slicing and rechunking, whole-array reductions, and a
/// `.npy` written and read back (in `dir`), all computed on `sched`.
pub fn node_backed(sched: Scheduler<'_>, dir: &Path) -> Answers {
    let g = Graph::new();
    let a = values();
    let x = Array::from_ndarray(&g, &a, &[16, 7]).unwrap();
    let row = Array::random(&g, &[30], &[9], 3).unwrap();
    let m = Array::random(&g, &[40, 30], &[13, 11], 5)
        .unwrap()
        .materialize();
    let shifted = x.add(&row).unwrap();
    let steps = m
        .sub(&x)
        .unwrap()
        .scalar(Op::Mul, 2.0)
        .apply(Func::Abs)
        .scalar_left(Op::Sub, 1.0);
    let product = x.t().dot(&m).unwrap();
    let mv = x.dot(&row).unwrap();
    let cut = x
        .slice(&[3..37, 2..29])
        .unwrap()
        .rechunk(&[10, 10])
        .unwrap();
    let path = compute(&g, sched, shifted.to_npy(dir.join("shifted.npy"))).unwrap();
    let back = Array::from_npy(&g, &path, &[12, 12]).unwrap();
    let mut arrays = vec![];
    for arr in [
        &x,
        &shifted,
        &steps,
        &x.sum_axis(0).unwrap(),
        &x.mean_axis(1).unwrap(),
        &m.var_axis(0).unwrap(),
        &x.argmax_axis(1).unwrap(),
        &product,
        &mv,
        &cut,
        &back,
    ] {
        arrays.push(arr.compute(sched).unwrap());
    }
    let (s, mean, var, hi) =
        compute(&g, sched, (x.sum(), m.mean(), shifted.var(), steps.max())).unwrap();
    let (amax, amin) = compute(&g, sched, (x.argmax(), product.argmin())).unwrap();
    Answers {
        arrays,
        numbers: vec![s, mean, var, hi],
        indices: vec![amax, amin],
    }
}

/// Equal within a relative tolerance (sums in another order), NaN equal to NaN.
fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) -> bool {
    a.shape() == b.shape()
        && a.iter().zip(b.iter()).all(|(x, y)| {
            (x.is_nan() && y.is_nan())
                || x == y
                || (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs()))
        })
}

/// An operand of `shape` in blocks of `chunks`, node-backed or random (data), and its values.
fn operand<'g>(
    g: &'g Graph,
    shape: &[usize],
    chunks: &[usize],
    rng: &mut fastrand::Rng,
) -> (Array<'g>, ArrayD<f64>) {
    if rng.bool() {
        let a = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.f64() * 2.0 - 1.0);
        (Array::from_ndarray(g, &a, chunks).unwrap(), a)
    } else {
        let x = Array::random(g, shape, chunks, rng.u64(..)).unwrap();
        let a = x.compute(lovage_graph::Inline).unwrap();
        (x, a)
    }
}

/// `cases` random `dot`s (2-D·2-D, 2-D·1-D, 1-D·2-D, each operand with its own chunks) and
/// broadcasting sums (`(n, m) + (m,)`, `(n, 1) + (1, m)`, `(n, m) * (n, 1)`) on `sched`,
/// against ndarray's `dot` and its own broadcasting.
pub fn random_dots_and_broadcasts(sched: Scheduler<'_>, cases: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..cases {
        let g = Graph::new();
        let (n, k, m) = (rng.usize(1..9), rng.usize(1..9), rng.usize(1..9));
        let form = case % 3;
        let (ls, lc) = if form == 2 {
            (vec![k], vec![rng.usize(1..=k)])
        } else {
            (vec![n, k], vec![rng.usize(1..=n), rng.usize(1..=k)])
        };
        let (rs, rc) = if form == 1 {
            (vec![k], vec![rng.usize(1..=k)])
        } else {
            (vec![k, m], vec![rng.usize(1..=k), rng.usize(1..=m)])
        };
        let (x, a) = operand(&g, &ls, &lc, &mut rng);
        let (y, b) = operand(&g, &rs, &rc, &mut rng);
        let want = match form {
            0 => a
                .clone()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix2>().unwrap())
                .into_dyn(),
            1 => a
                .clone()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix1>().unwrap())
                .into_dyn(),
            _ => a
                .clone()
                .into_dimensionality::<ndarray::Ix1>()
                .unwrap()
                .dot(&b.clone().into_dimensionality::<ndarray::Ix2>().unwrap())
                .into_dyn(),
        };
        let got = x.dot(&y).unwrap().compute(sched).unwrap();
        assert!(
            close(&got, &want),
            "dot {ls:?}{lc:?} · {rs:?}{rc:?}: {got:?} vs {want:?}"
        );
        // Broadcasting: the left operand 2-D, the right a row, a column or a (1, m).
        let (x, a) = operand(&g, &[n, m], &[rng.usize(1..=n), rng.usize(1..=m)], &mut rng);
        let other: Vec<usize> = match case % 3 {
            0 => vec![m],
            1 => vec![n, 1],
            _ => vec![1, m],
        };
        let oc: Vec<usize> = other.iter().map(|&l| rng.usize(1..=l)).collect();
        let (y, b) = operand(&g, &other, &oc, &mut rng);
        let got = x.add(&y).unwrap().compute(sched).unwrap();
        assert!(close(&got, &(&a + &b)), "{:?} + {other:?}", [n, m]);
        let got = y.mul(&x).unwrap().compute(sched).unwrap();
        assert!(close(&got, &(&b * &a)), "{other:?} * {:?}", [n, m]);
    }
}
