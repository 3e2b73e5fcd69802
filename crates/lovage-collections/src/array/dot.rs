//! `dot` / `matmul` by blocks (Dask's `da.dot`, `x @ y`) for 1-D and 2-D arrays: output
//! block `(i, j)` is the sum over `k` of the products of block `(i, k)` of the left operand
//! and block `(k, j)` of the right one, each product one registered task, summed in a tree
//! of tasks `SPLIT_EVERY` wide. Every scheduler runs it.

use lovage_graph::Delayed;

use super::grid::Grid;
use super::{tasks, Array, Block};
use crate::combine::SPLIT_EVERY;
use crate::Error;

impl<'g> Array<'g> {
    /// The matrix product (NumPy's `dot`, which is `matmul` for these shapes): `(n, k)·(k,
    /// m)` is `(n, m)`, `(n, k)·(k,)` is `(n,)`, `(k,)·(k, m)` is `(m,)`. The inner lengths
    /// must agree (an `Error::Input` names both shapes otherwise); when the chunks along the
    /// inner axis differ, the right operand is rechunked to the left one's. Two 1-D arrays
    /// give a number: use [`inner`](Array::inner); arrays of more than 2 axes are refused.
    pub fn dot(&self, other: &Array<'g>) -> Result<Self, Error> {
        let (a, b) = (self.ndim(), other.ndim());
        if a == 1 && b == 1 {
            return Err(Error::Input(format!(
                "dot of two 1-D arrays (shapes {:?} and {:?}) is a number: use inner",
                self.shape(),
                other.shape()
            )));
        }
        if a > 2 || b > 2 {
            return Err(Error::Input(format!(
                "dot takes 1-D and 2-D arrays, not shapes {:?} and {:?}",
                self.shape(),
                other.shape()
            )));
        }
        let (ka, kb) = (self.grid.shape[a - 1], other.grid.shape[0]);
        if ka != kb {
            return Err(Error::Input(format!(
                "dot: shapes {:?} and {:?} are not aligned: {ka} (axis {}) != {kb} (axis 0)",
                self.shape(),
                other.shape(),
                a - 1
            )));
        }
        // The right operand's inner chunks are made the left one's.
        let inner = self.grid.chunks[a - 1].clone();
        let other = if other.grid.chunks[0] == inner {
            other.clone()
        } else {
            let mut chunks = other.grid.chunks.clone();
            chunks[0] = inner.clone();
            let grid = Grid {
                shape: other.grid.shape.clone(),
                chunks,
            };
            other.regrid(grid, vec![0; b])
        };
        // The output: the left's rows (if 2-D), then the right's columns (if 2-D).
        let mut shape = Vec::new();
        let mut chunks = Vec::new();
        if a == 2 {
            shape.push(self.grid.shape[0]);
            chunks.push(self.grid.chunks[0].clone());
        }
        if b == 2 {
            shape.push(other.grid.shape[1]);
            chunks.push(other.grid.chunks[1].clone());
        }
        let grid = Grid { shape, chunks };
        let (ablocks, bblocks) = (self.blocks(), other.blocks());
        let nk = inner.len();
        let out = (0..grid.nblocks())
            .map(|ob| {
                let pos = grid.position(ob);
                let (_, oshape) = grid.block(ob);
                // Row block i of the left operand, column block j of the right one.
                let i = if a == 2 { pos.first().copied() } else { None };
                let j = if b == 2 { pos.last().copied() } else { None };
                let products: Vec<Delayed<Block>> = (0..nk)
                    .map(|k| {
                        let left = match i {
                            Some(i) => ablocks[self.grid.number(&[i, k])],
                            None => ablocks[k],
                        };
                        let right = match j {
                            Some(j) => bblocks[other.grid.number(&[k, j])],
                            None => bblocks[k],
                        };
                        tasks::matmul::delayed(self.g, left, right, oshape.clone())
                    })
                    .collect();
                sum_tree(self, products)
            })
            .collect();
        Ok(self.with_blocks(grid, out))
    }

    /// The matrix product: the same as [`dot`](Array::dot) for 1-D and 2-D arrays (NumPy's
    /// `x @ y`).
    pub fn matmul(&self, other: &Array<'g>) -> Result<Self, Error> {
        self.dot(other)
    }

    /// The inner product of two 1-D arrays of one length (`np.dot(v, w)` of vectors): the
    /// sum of their element-wise product (a lazy step and a reduction when both are data).
    pub fn inner(&self, other: &Array<'g>) -> Result<Delayed<f64>, Error> {
        if self.ndim() != 1 || other.ndim() != 1 || self.shape() != other.shape() {
            return Err(Error::Input(format!(
                "inner takes two 1-D arrays of one length, not shapes {:?} and {:?}",
                self.shape(),
                other.shape()
            )));
        }
        Ok(self.mul(other)?.sum())
    }
}

/// Blocks of one shape summed `SPLIT_EVERY` at a time until one is left.
fn sum_tree(x: &Array<'_>, mut level: Vec<Delayed<Block>>) -> Delayed<Block> {
    loop {
        if let [one] = level.as_slice() {
            return *one;
        }
        level = level
            .chunks(SPLIT_EVERY)
            .map(|group| match group {
                [one] => *one,
                _ => tasks::add_blocks::delayed(x.g, group.to_vec()),
            })
            .collect();
    }
}
