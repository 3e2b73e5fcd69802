//! The block grid: chunk lengths per axis, block offsets, and walking a block row by row.

use crate::Error;

/// Chunk lengths per axis, the last one of an axis possibly shorter (ragged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grid {
    pub(crate) shape: Vec<usize>,
    pub(crate) chunks: Vec<Vec<usize>>,
}

impl Grid {
    /// Blocks of `block[i]` along axis `i` (the last one ragged). A zero-length axis has one
    /// empty chunk.
    pub(crate) fn regular(shape: &[usize], block: &[usize]) -> Result<Grid, Error> {
        if shape.is_empty() {
            return Err(Error::Input(
                "an array needs at least one axis (shape [] given)".into(),
            ));
        }
        if block.len() != shape.len() {
            return Err(Error::Input(format!(
                "chunks {block:?} do not match shape {shape:?}: one chunk length per axis"
            )));
        }
        let mut chunks = Vec::with_capacity(shape.len());
        for (axis, (&n, &b)) in shape.iter().zip(block).enumerate() {
            if b == 0 {
                return Err(Error::Input(format!(
                    "chunk length 0 on axis {axis} (shape {shape:?}, chunks {block:?})"
                )));
            }
            let mut c: Vec<usize> = (0..n / b).map(|_| b).collect();
            if n % b != 0 || n == 0 {
                c.push(n % b);
            }
            chunks.push(c);
        }
        Ok(Grid {
            shape: shape.to_vec(),
            chunks,
        })
    }

    pub(crate) fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Blocks along each axis.
    pub(crate) fn counts(&self) -> Vec<usize> {
        self.chunks.iter().map(Vec::len).collect()
    }

    pub(crate) fn nblocks(&self) -> usize {
        self.chunks.iter().map(Vec::len).product()
    }

    /// The grid position of block `b` (blocks are numbered row-major over the grid).
    pub(crate) fn position(&self, b: usize) -> Vec<usize> {
        unravel(b, &self.counts())
    }

    /// Block number of a grid position.
    pub(crate) fn number(&self, pos: &[usize]) -> usize {
        ravel(pos, &self.counts())
    }

    /// Global index of block `b`'s first element, and the block's shape.
    pub(crate) fn block(&self, b: usize) -> (Vec<usize>, Vec<usize>) {
        let pos = self.position(b);
        let start = pos
            .iter()
            .zip(&self.chunks)
            .map(|(&p, c)| c[..p].iter().sum())
            .collect();
        let shape = pos.iter().zip(&self.chunks).map(|(&p, c)| c[p]).collect();
        (start, shape)
    }

    /// Start offsets of the chunks along `axis` (one more than chunks: the last is the length).
    pub(crate) fn offsets(&self, axis: usize) -> Vec<usize> {
        let mut out = vec![0];
        for c in &self.chunks[axis] {
            out.push(out.last().copied().unwrap_or(0) + c);
        }
        out
    }
}

/// The row-major flat index of `idx` in `shape` (how [`random`](super::Array::random) numbers elements).
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// The multi-index of row-major flat index `flat` in `shape`.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[i] = flat % n;
            flat /= n;
        }
    }
    idx
}

/// Calls `f(global start of the row, row length)` for every row (a run along the last axis)
/// of the block at `start` with shape `shape`, in row-major order.
pub(crate) fn for_each_row(start: &[usize], shape: &[usize], mut f: impl FnMut(&[usize], usize)) {
    let last = shape.len() - 1;
    let len = shape[last];
    if shape.contains(&0) {
        return;
    }
    let rows: usize = shape[..last].iter().product();
    let mut at = start.to_vec();
    for r in 0..rows {
        let local = unravel(r, &shape[..last]);
        for (i, l) in local.iter().enumerate() {
            at[i] = start[i] + l;
        }
        at[last] = start[last];
        f(&at, len);
    }
}
