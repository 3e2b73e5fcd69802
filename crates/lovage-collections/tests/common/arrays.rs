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
