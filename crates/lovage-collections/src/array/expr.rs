//! A lazy array as data: what `random`, `full` and the built-in element-wise steps on them
//! compute, written so that it can be sent to another process (a process pool's child, a
//! broker's worker) and turned back into the same generating function there.
//!
//! Closures (`map`, `from_fn`, `zip_with`) cannot be sent; an array made with one has no
//! expression and runs on the local schedulers only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::grid::ravel;
use super::{random_fill, Fill, PIECE};

/// A binary element-wise operation, between an array and a scalar or two arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b` (IEEE: `x / 0` is ±inf or NaN)
    Div,
    /// `a.powf(b)`
    Pow,
    /// The smaller (NaN if either is NaN, as NumPy's `minimum`)
    Min,
    /// The larger (NaN if either is NaN, as NumPy's `maximum`)
    Max,
}

impl Op {
    #[inline(always)]
    pub(crate) fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
            Op::Pow => a.powf(b),
            Op::Min => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            }
            Op::Max => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }
        }
    }
}

/// An element-wise function of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `√x` (NaN below 0)
    Sqrt,
    /// `eˣ`
    Exp,
    /// `ln x`
    Ln,
    /// `sin x`
    Sin,
    /// `cos x`
    Cos,
}

impl Func {
    #[inline(always)]
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            Func::Neg => -x,
            Func::Abs => x.abs(),
            Func::Sqrt => x.sqrt(),
            Func::Exp => x.exp(),
            Func::Ln => x.ln(),
            Func::Sin => x.sin(),
            Func::Cos => x.cos(),
        }
    }
}

/// What a lazy array's value at a global index is. Floats travel as their bits, so NaN and
/// infinities survive JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Expr {
    /// `random_at(seed, flat index in shape)`; `seed` is already mixed (`seed_of`).
    Random { seed: u64, shape: Vec<usize> },
    /// Every value the same (its bits).
    Full(u64),
    /// The value of `of` at `index + offset` (a slice or another chunking).
    Shift { offset: Vec<usize>, of: Box<Expr> },
    /// `of ⊕ value` (or `value ⊕ of` when `left`).
    Scalar {
        op: Op,
        value: u64,
        left: bool,
        of: Box<Expr>,
    },
    /// `f(of)`.
    Map { f: Func, of: Box<Expr> },
    /// `a ⊕ b` at the same index.
    Zip { op: Op, a: Box<Expr>, b: Box<Expr> },
    /// `of` (of shape `shape`) broadcast to `ndim` axes (NumPy's rules): leading axes dropped
    /// from the index, axes of length 1 read at 0.
    Broadcast {
        shape: Vec<usize>,
        ndim: usize,
        of: Box<Expr>,
    },
}

impl Expr {
    /// This expression, of shape `shape`, read at the indices of the shape `out` it
    /// broadcasts to (itself when the shapes are the same).
    pub(crate) fn broadcast(&self, shape: &[usize], out: &[usize]) -> Expr {
        if shape == out {
            return self.clone();
        }
        Expr::Broadcast {
            shape: shape.to_vec(),
            ndim: out.len(),
            of: Box::new(self.clone()),
        }
    }

    /// The generating function: values at consecutive indices along the last axis from a
    /// global multi-index, at most [`PIECE`] at a time.
    pub(crate) fn fill(&self) -> Fill {
        match self {
            Expr::Random { seed, shape } => {
                let (seed, shape) = (*seed, shape.clone());
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    random_fill(seed, ravel(start, &shape) as u64, out);
                })
            }
            Expr::Full(bits) => {
                let v = f64::from_bits(*bits);
                Arc::new(move |_: &[usize], out: &mut [f64]| out.fill(v))
            }
            Expr::Shift { offset, of } => {
                let (fill, offset) = (of.fill(), offset.clone());
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    let at: Vec<usize> = start.iter().zip(&offset).map(|(a, b)| a + b).collect();
                    fill(&at, out);
                })
            }
            Expr::Scalar {
                op,
                value,
                left,
                of,
            } => {
                let (fill, op, v, left) = (of.fill(), *op, f64::from_bits(*value), *left);
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    fill(start, out);
                    if left {
                        out.iter_mut().for_each(|x| *x = op.apply(v, *x));
                    } else {
                        out.iter_mut().for_each(|x| *x = op.apply(*x, v));
                    }
                })
            }
            Expr::Map { f, of } => {
                let (fill, f) = (of.fill(), *f);
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    fill(start, out);
                    out.iter_mut().for_each(|x| *x = f.apply(*x));
                })
            }
            Expr::Zip { op, a, b } => {
                let (fa, fb, op) = (a.fill(), b.fill(), *op);
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    let mut tmp = [0f64; PIECE];
                    let tmp = &mut tmp[..out.len()];
                    fa(start, out);
                    fb(start, tmp);
                    out.iter_mut()
                        .zip(tmp.iter())
                        .for_each(|(x, y)| *x = op.apply(*x, *y));
                })
            }
            Expr::Broadcast { shape, ndim, of } => {
                super::ops::broadcast_fill(of.fill(), shape.clone(), *ndim)
            }
        }
    }
}
