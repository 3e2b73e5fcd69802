//! What the node-backed array steps do to blocks: plain functions the registered tasks
//! (`tasks.rs`) and the closure steps call, so every scheduler computes the same bits.

use std::sync::Arc;

use lovage_core::TaskError;
use ndarray::{ArrayD, ArrayView2, Ix2, IxDyn, Slice};
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::expr::{Func, Op};
use super::grid::for_each_row;
use super::{fill_row, Fill};
use crate::{internal, Error};

/// An element-wise step of one value, as data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Step {
    /// `x op value` (`value op x` when `left`); the value as its bits.
    Scalar { op: Op, value: u64, left: bool },
    /// `f(x)`.
    Map(Func),
}

impl Step {
    #[inline(always)]
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            Step::Scalar { op, value, left } => {
                let v = f64::from_bits(value);
                if left {
                    op.apply(v, x)
                } else {
                    op.apply(x, v)
                }
            }
            Step::Map(f) => f.apply(x),
        }
    }
}

/// The block at `start` of shape `shape` of a lazy array, generated row by row.
pub(crate) fn generate_block(
    fill: &Fill,
    start: &[usize],
    shape: &[usize],
) -> Result<Block, TaskError> {
    let mut a = ArrayD::zeros(IxDyn(shape));
    let data = a
        .as_slice_mut()
        .ok_or_else(|| internal("a new block is not contiguous"))?;
    let len = shape.last().copied().unwrap_or(0);
    let mut row = 0;
    for_each_row(start, shape, |at, _| {
        fill_row(fill, at, &mut data[row * len..(row + 1) * len]);
        row += 1;
    });
    Ok(Block::new(a))
}

/// A block of shape `shape` whose first element is at global `lo`, copied from the parts of
/// `blocks` (block `k` at global `starts[k]`) that overlap it.
pub(crate) fn regrid_block(
    shape: &[usize],
    lo: &[usize],
    starts: &[Vec<usize>],
    blocks: &[Block],
) -> Result<Block, TaskError> {
    if starts.len() != blocks.len() {
        return Err(internal("a regrid has not one start per block"));
    }
    let mut out = ArrayD::zeros(IxDyn(shape));
    for (src, sstart) in blocks.iter().zip(starts) {
        copy_overlap(&mut out, lo, src, sstart);
    }
    Ok(Block::new(out))
}

/// Copies into `dst` (whose first element is at global `dst_start`) the part of `src` (at
/// global `src_start`) that overlaps it.
pub(crate) fn copy_overlap(
    dst: &mut ArrayD<f64>,
    dst_start: &[usize],
    src: &ArrayD<f64>,
    src_start: &[usize],
) {
    let nd = dst.ndim();
    let mut lo = vec![0; nd];
    let mut hi = vec![0; nd];
    for i in 0..nd {
        lo[i] = dst_start[i].max(src_start[i]);
        hi[i] = (dst_start[i] + dst.shape()[i]).min(src_start[i] + src.shape()[i]);
        if hi[i] <= lo[i] {
            return;
        }
    }
    let from = src.slice_each_axis(|ax| {
        let i = ax.axis.index();
        Slice::from(lo[i] - src_start[i]..hi[i] - src_start[i])
    });
    dst.slice_each_axis_mut(|ax| {
        let i = ax.axis.index();
        Slice::from(lo[i] - dst_start[i]..hi[i] - dst_start[i])
    })
    .assign(&from);
}

/// NumPy's broadcast shape of two shapes: aligned at their last axes, each pair of lengths
/// equal or one of them 1 (a missing axis counts as 1).
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, Error> {
    let nd = a.len().max(b.len());
    let mut out = vec![0; nd];
    for (i, o) in out.iter_mut().enumerate() {
        let da = (i + a.len()).checked_sub(nd).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(nd).map_or(1, |j| b[j]);
        *o = match (da, db) {
            _ if da == db => da,
            (1, _) => db,
            (_, 1) => da,
            _ => {
                return Err(Error::Input(format!(
                    "shapes {a:?} and {b:?} do not broadcast: axis {i} of the result would \
                     take lengths {da} and {db} (aligned at the last axis, each pair must be \
                     equal or one of them 1)"
                )))
            }
        };
    }
    Ok(out)
}

/// The values of an operand of shape `shape` broadcast to `ndim` axes: the generating function
/// of the result's indices (leading axes dropped, axes of length 1 read at 0; an operand of
/// length 1 along the last axis gives one value for the whole run).
pub(crate) fn broadcast_fill(fill: Fill, shape: Vec<usize>, ndim: usize) -> Fill {
    let lead = ndim - shape.len();
    let last_is_one = shape.last() == Some(&1);
    Arc::new(move |start: &[usize], out: &mut [f64]| {
        let at: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(j, &n)| if n == 1 { 0 } else { start[j + lead] })
            .collect();
        if last_is_one {
            let mut one = [0f64];
            fill(&at, &mut one);
            out.fill(one[0]);
        } else {
            fill(&at, out);
        }
    })
}

/// `f(a, b)` element-wise, each block broadcast to `shape` (NumPy's rules).
pub(crate) fn zip_blocks(
    f: impl Fn(f64, f64) -> f64,
    shape: &[usize],
    a: &Block,
    b: &Block,
) -> Result<Block, TaskError> {
    fn broadcast<'a>(
        x: &'a Block,
        shape: &[usize],
    ) -> Result<ndarray::ArrayViewD<'a, f64>, TaskError> {
        x.broadcast(IxDyn(shape)).ok_or_else(|| {
            internal(&format!(
                "a block of shape {:?} does not broadcast to {shape:?}",
                x.shape()
            ))
        })
    }
    let (av, bv) = (broadcast(a, shape)?, broadcast(b, shape)?);
    Ok(Block::new(
        ndarray::Zip::from(&av)
            .and(&bv)
            .map_collect(|&x, &y| f(x, y)),
    ))
}

/// A 1-D or 2-D block as a matrix: a vector is a row on the left of a product (`as_row`),
/// a column on the right.
fn as_matrix(x: &Block, as_row: bool) -> Result<ArrayView2<'_, f64>, TaskError> {
    let v = x.view();
    match x.ndim() {
        1 if as_row => v.into_shape_with_order((1, x.len())),
        1 => v.into_shape_with_order((x.len(), 1)),
        _ => v.into_dimensionality::<Ix2>(),
    }
    .map_err(|e| {
        internal(&format!(
            "a block of shape {:?} is not a matrix: {e}",
            x.shape()
        ))
    })
}

/// The matrix product of two blocks (1-D or 2-D), as a block of shape `shape`.
pub(crate) fn matmul_block(a: &Block, b: &Block, shape: &[usize]) -> Result<Block, TaskError> {
    let (ma, mb) = (as_matrix(a, true)?, as_matrix(b, false)?);
    if ma.ncols() != mb.nrows() {
        return Err(internal(&format!(
            "dot: blocks of shapes {:?} and {:?} are not aligned",
            a.shape(),
            b.shape()
        )));
    }
    let c = ma.dot(&mb);
    let values: Vec<f64> = c.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map(Block::new)
        .map_err(|e| internal(&format!("dot: a product block is not {shape:?}: {e}")))
}

/// The element-wise sum of blocks of one shape, in order.
pub(crate) fn sum_blocks(blocks: &[Block]) -> Result<Block, TaskError> {
    let (first, rest) = blocks
        .split_first()
        .ok_or_else(|| internal("a sum of no blocks"))?;
    let mut out = ArrayD::clone(first);
    for b in rest {
        if b.shape() != out.shape() {
            return Err(internal(&format!(
                "a sum of blocks of shapes {:?} and {:?}",
                out.shape(),
                b.shape()
            )));
        }
        out += &**b;
    }
    Ok(Block::new(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shapes_broadcast_as_numpy_says() {
        assert_eq!(broadcast_shape(&[4, 3], &[3]).unwrap(), vec![4, 3]);
        assert_eq!(broadcast_shape(&[4, 1], &[1, 5]).unwrap(), vec![4, 5]);
        assert_eq!(broadcast_shape(&[1], &[2, 3, 0]).unwrap(), vec![2, 3, 0]);
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        let err = broadcast_shape(&[4, 3], &[4]).unwrap_err().to_string();
        assert!(
            err.contains("[4, 3]") && err.contains("[4]") && err.contains("lengths 3 and 4"),
            "{err}"
        );
    }
}
