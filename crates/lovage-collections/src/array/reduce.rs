//! Reductions over the whole array or one axis, with NumPy's answers for NaN and infinities:
//! partials per block (count, sum, mean and M2 for the variance, extremes, argmax), merged
//! in a tree with Chan's parallel formulas.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::Delayed;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::grid::{for_each_row, ravel, Grid};
use super::tasks;
use super::{fill_row_pieces, Array, Block, Fill, Src};
use crate::combine::{finish, tree, SPLIT_EVERY};
use crate::{data_error, internal, Error};

/// What a reduction keeps per partial: only what its answer needs, so a mean pays for a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Sum,
    Moments,
    Min,
    Max,
    ArgMax,
    ArgMin,
}

/// A partial: `n` values seen; their sum; for `Moments` their mean and sum of squared
/// deviations (M2); for extremes the best value and its index (flat, or along the axis).
/// Sent between processes as six integers (the floats' bits), so NaN and infinities
/// survive JSON.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(from = "[u64; 6]", into = "[u64; 6]")]
pub(crate) struct Acc {
    pub(crate) n: u64,
    sum: f64,
    mean: f64,
    m2: f64,
    best: f64,
    pub(crate) at: u64,
}

impl From<[u64; 6]> for Acc {
    fn from([n, sum, mean, m2, best, at]: [u64; 6]) -> Self {
        Acc {
            n,
            sum: f64::from_bits(sum),
            mean: f64::from_bits(mean),
            m2: f64::from_bits(m2),
            best: f64::from_bits(best),
            at,
        }
    }
}

impl From<Acc> for [u64; 6] {
    fn from(a: Acc) -> Self {
        [
            a.n,
            a.sum.to_bits(),
            a.mean.to_bits(),
            a.m2.to_bits(),
            a.best.to_bits(),
            a.at,
        ]
    }
}

impl Acc {
    pub(crate) const EMPTY: Acc = Acc {
        n: 0,
        sum: 0.0,
        mean: 0.0,
        m2: 0.0,
        best: f64::NAN,
        at: 0,
    };

    /// Folds consecutive values, the first at index `at0`.
    fn push(&mut self, kind: Kind, xs: &[f64], at0: u64) {
        if xs.is_empty() {
            return;
        }
        match kind {
            Kind::Sum => {
                self.sum += sum(xs);
                self.n += xs.len() as u64;
            }
            Kind::Moments => {
                let s = sum(xs);
                let m = s / xs.len() as f64;
                let m2: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
                self.merge(
                    kind,
                    &Acc {
                        n: xs.len() as u64,
                        sum: s,
                        mean: m,
                        m2,
                        ..Acc::EMPTY
                    },
                );
            }
            Kind::Min | Kind::Max => {
                // NaN is sticky: once seen, the answer is NaN (NumPy's min/max).
                let mut best = if self.n == 0 { xs[0] } else { self.best };
                for &x in xs {
                    let better = if kind == Kind::Max {
                        x > best
                    } else {
                        x < best
                    };
                    if better || x.is_nan() {
                        best = if best.is_nan() { best } else { x };
                    }
                }
                self.best = best;
                self.n += xs.len() as u64;
            }
            Kind::ArgMax | Kind::ArgMin => {
                // The first NaN wins (NumPy's argmax), else the first extreme.
                let (mut best, mut at) = if self.n == 0 {
                    (xs[0], at0)
                } else {
                    (self.best, self.at)
                };
                if !best.is_nan() {
                    for (k, &x) in xs.iter().enumerate() {
                        let better = if kind == Kind::ArgMax {
                            x > best
                        } else {
                            x < best
                        };
                        if x.is_nan() {
                            (best, at) = (x, at0 + k as u64);
                            break;
                        }
                        if better {
                            (best, at) = (x, at0 + k as u64);
                        }
                    }
                }
                (self.best, self.at) = (best, at);
                self.n += xs.len() as u64;
            }
        }
    }

    pub(crate) fn merge(&mut self, kind: Kind, o: &Acc) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        match kind {
            Kind::Sum => self.sum += o.sum,
            Kind::Moments => {
                let n = (self.n + o.n) as f64;
                let delta = o.mean - self.mean;
                self.m2 += o.m2 + delta * delta * (self.n as f64) * (o.n as f64) / n;
                self.mean += delta * o.n as f64 / n;
                self.sum += o.sum;
            }
            Kind::Min | Kind::Max => {
                if self.best.is_nan() || o.best.is_nan() {
                    self.best = f64::NAN;
                } else if kind == Kind::Max {
                    self.best = self.best.max(o.best);
                } else {
                    self.best = self.best.min(o.best);
                }
            }
            Kind::ArgMax | Kind::ArgMin => {
                let (a, b) = (self.best, o.best);
                let take = match (a.is_nan(), b.is_nan()) {
                    (true, true) => o.at < self.at,
                    (true, false) => false,
                    (false, true) => true,
                    _ if a == b => o.at < self.at,
                    _ => (kind == Kind::ArgMax) == (b > a),
                };
                if take {
                    (self.best, self.at) = (b, o.at);
                }
            }
        }
        self.n += o.n;
    }
}

/// A sum in sixteen lanes: independent adds the CPU overlaps (a single running total waits
/// on each add's latency), and a little more accurate than one total. Lazy and materialised
/// blocks are summed in the same pieces, so they give the same bits.
#[inline]
fn sum(xs: &[f64]) -> f64 {
    const LANES: usize = 16;
    let mut lanes = [0f64; LANES];
    let mut it = xs.chunks_exact(LANES);
    for c in &mut it {
        for k in 0..LANES {
            lanes[k] += c[k];
        }
    }
    let tail: f64 = it.remainder().iter().sum();
    // Pairwise: 16 → 8 → 4 → 2 → 1.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            lanes[k] += lanes[k + w];
        }
    }
    lanes[0] + tail
}

/// A finished statistic from a merged partial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Stat {
    Sum,
    Mean,
    Var(f64),
    Std(f64),
    Min,
    Max,
    Arg,
}

impl Stat {
    fn kind(self, arg_max: bool) -> Kind {
        match self {
            Stat::Sum | Stat::Mean => Kind::Sum,
            Stat::Var(_) | Stat::Std(_) => Kind::Moments,
            Stat::Min => Kind::Min,
            Stat::Max => Kind::Max,
            Stat::Arg if arg_max => Kind::ArgMax,
            Stat::Arg => Kind::ArgMin,
        }
    }

    /// NumPy's answer: an empty mean or variance is NaN, an empty min/max is an error.
    pub(crate) fn value(self, a: &Acc, what: &str) -> Result<f64, TaskError> {
        let n = a.n as f64;
        Ok(match self {
            Stat::Sum => a.sum,
            Stat::Mean => a.sum / n,
            Stat::Var(ddof) => a.m2 / (n - ddof).max(0.0),
            Stat::Std(ddof) => (a.m2 / (n - ddof).max(0.0)).sqrt(),
            Stat::Min | Stat::Max | Stat::Arg => {
                if a.n == 0 {
                    return Err(data_error(format!("{what} of an empty array")));
                }
                if matches!(self, Stat::Arg) {
                    a.at as f64
                } else {
                    a.best
                }
            }
        })
    }
}

/// The partial of the block at `start` of shape `bshape` of a lazy array of shape `shape`,
/// generated piece by piece: the block is never held.
pub(crate) fn lazy_partial(
    fill: &Fill,
    kind: Kind,
    shape: &[usize],
    start: &[usize],
    bshape: &[usize],
) -> Acc {
    let mut acc = Acc::EMPTY;
    let mut buf = [0f64; super::PIECE];
    for_each_row(start, bshape, |at, len| {
        let flat = ravel(at, shape) as u64;
        fill_row_pieces(fill, at, len, &mut buf, |k, xs| {
            acc.push(kind, xs, flat + k as u64)
        });
    });
    acc
}

/// The partial of a whole block at global `start` of an array of shape `shape`: folded in the
/// same pieces as a lazy array's, so a materialised block sums to the same bits.
pub(crate) fn block_partial(kind: Kind, shape: &[usize], start: &[usize], block: &Block) -> Acc {
    let data = block.values();
    let bshape = block.shape();
    let len = bshape.last().copied().unwrap_or(0);
    let mut acc = Acc::EMPTY;
    let mut row = 0;
    for_each_row(start, bshape, |at, _| {
        let flat = ravel(at, shape) as u64;
        let row_data = &data[row * len..(row + 1) * len];
        for (k, xs) in row_data.chunks(super::PIECE).enumerate() {
            acc.push(kind, xs, flat + (k * super::PIECE) as u64);
        }
        row += 1;
    });
    acc
}

/// One output block of a reduction along `axis`: `blocks` are the input blocks along that
/// axis in order, `offsets` their start offsets along it.
pub(crate) fn axis_block(
    stat: Stat,
    axis: usize,
    offsets: &[usize],
    what: &str,
    blocks: &[Block],
) -> Result<Block, TaskError> {
    let kind = stat.kind(true);
    let mut accs: Option<ArrayD<Acc>> = None;
    for (c, a) in blocks.iter().enumerate() {
        if axis >= a.ndim() {
            return Err(internal("an axis reduction's block has too few axes"));
        }
        let at0 = offsets.get(c).copied().unwrap_or(0) as u64;
        let part = a.map_axis(Axis(axis), |lane| {
            let mut acc = Acc::EMPTY;
            let lane = lane.to_vec();
            acc.push(kind, &lane, at0);
            acc
        });
        match &mut accs {
            None => accs = Some(part),
            Some(acc) => ndarray::Zip::from(acc)
                .and(&part)
                .for_each(|x, y| x.merge(kind, y)),
        }
    }
    let accs = accs.ok_or_else(|| internal("an axis reduction has no block"))?;
    let mut out = ArrayD::zeros(IxDyn(accs.shape()));
    for (o, a) in out.iter_mut().zip(accs.iter()) {
        *o = stat.value(a, what)?;
    }
    Ok(Block::new(out))
}

/// A whole-array reduction's merged partial: registered tasks (an array of data, every
/// scheduler) or closures (an array made by a closure, local schedulers).
enum Reduction {
    Tasks(Delayed<Acc>),
    Local(Delayed<Arc<Acc>>),
}

impl<'g> Array<'g> {
    /// One partial per block of an array made by a closure, merged in a tree of closures
    /// (local schedulers only).
    fn reduce_all(&self, fill: &Fill, step: &'static str, kind: Kind) -> Delayed<Arc<Acc>> {
        let shape = self.grid.shape.clone();
        let partials = (0..self.grid.nblocks())
            .map(|b| {
                let (start, bshape) = self.grid.block(b);
                let (shape, fill) = (shape.clone(), fill.clone());
                // Generated piece by piece: the block is never held.
                self.g.try_local_all(
                    step,
                    move |_: Vec<Block>| {
                        Ok(Arc::new(lazy_partial(&fill, kind, &shape, &start, &bshape)))
                    },
                    Vec::new(),
                )
            })
            .collect();
        tree(
            self.g,
            partials,
            SPLIT_EVERY,
            "array-combine",
            Arc::new(|| Acc::EMPTY),
            Arc::new(move |a: &mut Acc, b: &Acc| a.merge(kind, b)),
        )
    }

    /// The reduction of an array built from data, as registered tasks (every scheduler):
    /// one partial per block, then a tree of combining tasks `SPLIT_EVERY` partials wide. A
    /// lazy array's partial generates its block and folds it (the block is never held, never
    /// sent); a node-backed array's folds the block its node made.
    fn reduce(&self, kind: Kind) -> Reduction {
        let shape = &self.grid.shape;
        let mut level: Vec<Delayed<Acc>> = match &self.src {
            Src::Lazy(_, Ok(expr)) => (0..self.grid.nblocks())
                .map(|b| {
                    let (start, bshape) = self.grid.block(b);
                    tasks::partial::delayed(
                        self.g,
                        Expr::clone(expr),
                        kind,
                        shape.clone(),
                        start,
                        bshape,
                    )
                })
                .collect(),
            Src::Blocks(blocks) => blocks
                .iter()
                .enumerate()
                .map(|(b, &block)| {
                    let (start, _) = self.grid.block(b);
                    tasks::block_partial::delayed(self.g, kind, shape.clone(), start, block)
                })
                .collect(),
            Src::Lazy(fill, Err(step)) => {
                return Reduction::Local(self.reduce_all(fill, step, kind))
            }
        };
        loop {
            match level.as_slice() {
                [one] => return Reduction::Tasks(*one),
                [] => {
                    let none = tasks::combine::delayed(self.g, kind, Vec::<Acc>::new());
                    return Reduction::Tasks(none);
                }
                _ => {}
            }
            level = level
                .chunks(SPLIT_EVERY)
                .map(|group| tasks::combine::delayed(self.g, kind, group.to_vec()))
                .collect();
        }
    }

    fn stat(&self, stat: Stat, what: &'static str) -> Delayed<f64> {
        let acc = match self.reduce(stat.kind(true)) {
            Reduction::Tasks(acc) => {
                return tasks::stat::delayed(self.g, stat, what.to_owned(), acc)
            }
            Reduction::Local(acc) => acc,
        };
        self.g.try_local_all(
            what,
            move |v: Vec<Arc<Acc>>| {
                let a = v
                    .first()
                    .ok_or_else(|| internal("a reduction lost its input"))?;
                stat.value(a, what)
            },
            vec![acc],
        )
    }

    /// The sum of all values (0 for an empty array; NaN if any is NaN; inf − inf is NaN).
    pub fn sum(&self) -> Delayed<f64> {
        self.stat(Stat::Sum, "sum")
    }
    /// The mean (NaN for an empty array).
    pub fn mean(&self) -> Delayed<f64> {
        self.stat(Stat::Mean, "mean")
    }
    /// The population variance (NumPy's `var()`, `ddof = 0`).
    pub fn var(&self) -> Delayed<f64> {
        self.stat(Stat::Var(0.0), "var")
    }
    /// The variance with `ddof` delta degrees of freedom (`ddof = 1`: the sample variance).
    pub fn var_ddof(&self, ddof: f64) -> Delayed<f64> {
        self.stat(Stat::Var(ddof), "var")
    }
    /// The standard deviation (`ddof = 0`).
    pub fn std(&self) -> Delayed<f64> {
        self.stat(Stat::Std(0.0), "std")
    }
    /// The smallest value (NaN if any is NaN; an empty array fails the task).
    pub fn min(&self) -> Delayed<f64> {
        self.stat(Stat::Min, "min")
    }
    /// The largest value (NaN if any is NaN; an empty array fails the task).
    pub fn max(&self) -> Delayed<f64> {
        self.stat(Stat::Max, "max")
    }
    /// The flat (row-major) index of the largest value: the first NaN if there is one, else
    /// the first of equal maxima.
    pub fn argmax(&self) -> Delayed<usize> {
        self.arg(Kind::ArgMax, "argmax")
    }
    /// The flat index of the smallest value (NaN first, like [`argmax`](Array::argmax)).
    pub fn argmin(&self) -> Delayed<usize> {
        self.arg(Kind::ArgMin, "argmin")
    }

    fn arg(&self, kind: Kind, what: &'static str) -> Delayed<usize> {
        let acc = match self.reduce(kind) {
            Reduction::Tasks(acc) => return tasks::index::delayed(self.g, what.to_owned(), acc),
            Reduction::Local(acc) => acc,
        };
        finish(self.g, acc, |a| a.at as usize)
            .pipe_empty_check(self.g, self.grid.shape.iter().product::<usize>() == 0)
    }

    /// A reduction along `axis`: an array with that axis removed (its blocks those of the
    /// other axes). Every block along the axis feeds each output block's one task.
    fn reduce_axis(&self, stat: Stat, axis: usize, what: &'static str) -> Result<Self, Error> {
        if axis >= self.ndim() {
            return Err(Error::Input(format!(
                "{what}: axis {axis} is out of range for an array of {} axes",
                self.ndim()
            )));
        }
        if self.ndim() < 2 {
            return Err(Error::Input(format!(
                "{what} over axis {axis} of a 1-D array is the whole reduction: use {what}()"
            )));
        }
        let mut oshape = self.grid.shape.clone();
        oshape.remove(axis);
        let mut ochunks = self.grid.chunks.clone();
        ochunks.remove(axis);
        let ogrid = Grid {
            shape: oshape,
            chunks: ochunks,
        };
        let offs = self.grid.offsets(axis);
        let blocks = self.blocks();
        let out = (0..ogrid.nblocks())
            .map(|ob| {
                let opos = ogrid.position(ob);
                let inputs: Vec<Delayed<Block>> = (0..self.grid.chunks[axis].len())
                    .map(|c| {
                        let mut pos = opos.clone();
                        pos.insert(axis, c);
                        blocks[self.grid.number(&pos)]
                    })
                    .collect();
                tasks::axis::delayed(self.g, stat, axis, offs.clone(), what.to_owned(), inputs)
            })
            .collect();
        Ok(self.with_blocks(ogrid, out))
    }
    /// Sums along `axis`.
    pub fn sum_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Sum, axis, "sum")
    }
    /// Means along `axis`.
    pub fn mean_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Mean, axis, "mean")
    }
    /// Variances (`ddof = 0`) along `axis`.
    pub fn var_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Var(0.0), axis, "var")
    }
    /// Standard deviations (`ddof = 0`) along `axis`.
    pub fn std_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Std(0.0), axis, "std")
    }
    /// Minima along `axis`.
    pub fn min_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Min, axis, "min")
    }
    /// Maxima along `axis`.
    pub fn max_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Max, axis, "max")
    }
    /// Indices along `axis` of the maxima (as `f64`; the first NaN wins).
    pub fn argmax_axis(&self, axis: usize) -> Result<Self, Error> {
        self.reduce_axis(Stat::Arg, axis, "argmax")
    }
}

/// Makes an arg-reduction of an empty array fail its task, as NumPy raises.
trait EmptyCheck {
    fn pipe_empty_check(self, g: &lovage_graph::Graph, empty: bool) -> Self;
}

impl EmptyCheck for Delayed<usize> {
    fn pipe_empty_check(self, g: &lovage_graph::Graph, empty: bool) -> Self {
        if !empty {
            return self;
        }
        g.try_local_all(
            "argmax",
            |_: Vec<usize>| Err(data_error("argmax/argmin of an empty array")),
            vec![self],
        )
    }
}
