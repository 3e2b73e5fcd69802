//! `Array`: a lazy n-dimensional `f64` array in a grid of blocks (Dask's `dask.array`).
//!
//! An array is either *lazy* (its values are a function of the global index: `random`,
//! `zeros`, `from_fn`, and element-wise steps on them, broadcasting included) or a node per
//! block (`from_ndarray`, `from_npy`, `materialize`, and what steps on such an array, axis
//! reductions, `t`, `dot` and `map_blocks` make). A reduction of a lazy array runs one task
//! per block that generates the block piece by piece (4,096 values at a time, on the stack)
//! and folds it, so a billion-element mean never holds more than a few pieces per thread; a
//! block of a node-backed array is one `ndarray` array ([`Block`]), made by a registered task
//! unless a closure step made it, so it runs on a process pool and a broker's workers too
//! (the block crosses as its raw little-endian bytes).
//!
//! ```
//! use lovage_collections::array::Array;
//! use lovage_graph::{Graph, Inline};
//!
//! let g = Graph::new();
//! let x = Array::random(&g, &[1_000], &[300], 7).unwrap();
//! let y = x.map(|v| 2.0 * v);
//! let (m, m2) = lovage_collections::compute(&g, Inline, (x.mean(), y.mean())).unwrap();
//! assert!((m2 - 2.0 * m).abs() < 1e-12);
//! ```

mod block;
mod dot;
mod expr;
mod grid;
mod npy;
mod ops;
mod reduce;
pub(crate) mod tasks;

pub use block::Block;
pub use expr::{Func, Op};

pub use grid::ravel as flat_index;

use std::ops::Range;
use std::sync::Arc;

use lovage_graph::{Delayed, Graph, Picture, Scheduler};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};

use crate::{internal, Error};
use expr::Expr;
use grid::Grid;
use ops::Step;

/// Values at consecutive indices along the last axis from a global multi-index, at most
/// [`PIECE`] at a time.
type Fill = Arc<dyn Fn(&[usize], &mut [f64]) + Send + Sync>;

/// The most values a lazy array's function is asked for at once (32 KiB of `f64`: the stack
/// buffer of a streaming reduction stays in L1/L2).
const PIECE: usize = 4096;

#[derive(Clone)]
enum Src {
    /// Its generating function, and the same as data when it was built from data only (then
    /// its reductions are registered tasks and run on every scheduler); otherwise the name
    /// of the closure step that made it (its nodes carry it, and errors name it).
    Lazy(Fill, Result<Arc<Expr>, &'static str>),
    /// One node per block, row-major over the grid.
    Blocks(Vec<Delayed<Block>>),
}

/// A lazy n-dimensional `f64` array cut into blocks, in a [`Graph`]. Cheap to clone.
#[derive(Clone)]
pub struct Array<'g> {
    g: &'g Graph,
    grid: Grid,
    src: Src,
}

impl std::fmt::Debug for Array<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array(shape {:?}, {} blocks{})",
            self.grid.shape,
            self.grid.nblocks(),
            if matches!(self.src, Src::Lazy(..)) {
                ", lazy"
            } else {
                ""
            }
        )
    }
}

/// splitmix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stream [`random`](Array::random) draws from for `seed` (the seed, mixed): element
/// `i` is `random_at(seed_of(seed), i)`.
pub fn seed_of(seed: u64) -> u64 {
    mix(seed)
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The uniform `[0, 1)` value (52 random bits) at flat index `i` of the stream `seed`: splitmix64 is a counter
/// (state `seed + (i + 1)·γ`) mixed, so any element is computed directly and the array is the
/// same whatever its chunks.
#[inline]
pub fn random_at(seed: u64, i: u64) -> f64 {
    unit(mix(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA))))
}

/// The top 52 bits of `z` as the mantissa of a number in [1, 2), minus 1: no integer-to-float
/// conversion (which has no vector instruction for u64 before AVX-512).
#[inline(always)]
fn unit(z: u64) -> f64 {
    f64::from_bits(0x3ff0_0000_0000_0000 | (z >> 12)) - 1.0
}

/// Fills `out` with `random_at(seed, first + k)` for each `k`, much faster than calling
/// [`random_at`] for each. The loop is the same on every CPU; it is also compiled
/// for AVX-512 (which has a 64-bit vector multiply, 8 values per instruction) and AVX2, and the
/// best the CPU has is picked at run time: the numbers are the same bits either way (integer
/// arithmetic and an exact conversion).
pub fn random_fill(seed: u64, first: u64, out: &mut [f64]) {
    fill_uniform(
        seed.wrapping_add(first.wrapping_add(1).wrapping_mul(GAMMA)),
        out,
    )
}

/// [`random_fill`] from the counter state of its first value.
fn fill_uniform(state: u64, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has AVX-512F and AVX-512DQ, checked just above.
            return unsafe { fill_uniform_avx512(state, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { fill_uniform_avx2(state, out) };
        }
    }
    fill_uniform_loop(state, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn fill_uniform_avx512(state: u64, out: &mut [f64]) {
    fill_uniform_loop(state, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_uniform_avx2(state: u64, out: &mut [f64]) {
    fill_uniform_loop(state, out)
}

/// Counter `state + k·γ` for the k-th value: no dependence between values, so the compiler
/// vectorizes it.
#[inline(always)]
fn fill_uniform_loop(state: u64, out: &mut [f64]) {
    for (k, x) in out.iter_mut().enumerate() {
        *x = unit(mix(state.wrapping_add((k as u64).wrapping_mul(GAMMA))));
    }
}

/// Fills `out` from `fill` in pieces of at most [`PIECE`] along the last axis.
fn fill_row(fill: &Fill, start: &[usize], out: &mut [f64]) {
    let last = start.len() - 1;
    let mut at = start.to_vec();
    for (k, piece) in out.chunks_mut(PIECE).enumerate() {
        at[last] = start[last] + k * PIECE;
        fill(&at, piece);
    }
}

/// Calls `f(offset, values)` for a row of `len` values from `start`, generated a piece at a
/// time into `buf`.
fn fill_row_pieces(
    fill: &Fill,
    start: &[usize],
    len: usize,
    buf: &mut [f64; PIECE],
    mut f: impl FnMut(usize, &[f64]),
) {
    let last = start.len() - 1;
    let mut at = start.to_vec();
    let mut k = 0;
    while k < len {
        let n = PIECE.min(len - k);
        at[last] = start[last] + k;
        fill(&at, &mut buf[..n]);
        f(k, &buf[..n]);
        k += n;
    }
}

impl<'g> Array<'g> {
    /// A lazy array from a closure: local schedulers only.
    fn lazy(g: &'g Graph, grid: Grid, fill: Fill, step: &'static str) -> Self {
        Array {
            g,
            grid,
            src: Src::Lazy(fill, Err(step)),
        }
    }

    /// A lazy array from data: its reductions run on every scheduler.
    fn lazy_expr(g: &'g Graph, grid: Grid, expr: Expr) -> Self {
        Array {
            g,
            grid,
            src: Src::Lazy(expr.fill(), Ok(Arc::new(expr))),
        }
    }

    /// This array's expression, if it has one.
    fn expr(&self) -> Option<&Expr> {
        match &self.src {
            Src::Lazy(_, Ok(e)) => Some(e),
            _ => None,
        }
    }

    /// Uniform random values in `[0, 1)` from `seed`: the same numbers whatever the chunks or
    /// the scheduler (each value is a function of the seed and its flat index).
    pub fn random(
        g: &'g Graph,
        shape: &[usize],
        chunks: &[usize],
        seed: u64,
    ) -> Result<Self, Error> {
        let grid = Grid::regular(shape, chunks)?;
        let shape = grid.shape.clone();
        Ok(Self::lazy_expr(
            g,
            grid,
            Expr::Random {
                seed: mix(seed),
                shape,
            },
        ))
    }

    /// Every value `v`.
    pub fn full(g: &'g Graph, shape: &[usize], chunks: &[usize], v: f64) -> Result<Self, Error> {
        let grid = Grid::regular(shape, chunks)?;
        Ok(Self::lazy_expr(g, grid, Expr::Full(v.to_bits())))
    }

    /// Zeros.
    pub fn zeros(g: &'g Graph, shape: &[usize], chunks: &[usize]) -> Result<Self, Error> {
        Self::full(g, shape, chunks, 0.0)
    }

    /// Ones.
    pub fn ones(g: &'g Graph, shape: &[usize], chunks: &[usize]) -> Result<Self, Error> {
        Self::full(g, shape, chunks, 1.0)
    }

    /// The value `f(index)` at every (global) index.
    pub fn from_fn(
        g: &'g Graph,
        shape: &[usize],
        chunks: &[usize],
        f: impl Fn(&[usize]) -> f64 + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let grid = Grid::regular(shape, chunks)?;
        Ok(Self::lazy(
            g,
            grid,
            Arc::new(move |start: &[usize], out: &mut [f64]| {
                let last = start.len() - 1;
                let mut at = start.to_vec();
                for (k, x) in out.iter_mut().enumerate() {
                    at[last] = start[last] + k;
                    *x = f(&at);
                }
            }),
            "array-from-fn",
        ))
    }

    /// An array cut from `a` into blocks of `chunks`: one node per block, whose call carries
    /// the block as data (so it runs on every scheduler).
    pub fn from_ndarray(g: &'g Graph, a: &ArrayD<f64>, chunks: &[usize]) -> Result<Self, Error> {
        let grid = Grid::regular(a.shape(), chunks)?;
        let blocks = (0..grid.nblocks())
            .map(|b| {
                let (start, shape) = grid.block(b);
                let view = a.slice_each_axis(|ax| {
                    let i = ax.axis.index();
                    Slice::from(start[i]..start[i] + shape[i])
                });
                tasks::data::delayed(g, Block::new(view.to_owned()))
            })
            .collect();
        Ok(Array {
            g,
            grid,
            src: Src::Blocks(blocks),
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.grid.shape
    }

    /// Chunk lengths along each axis.
    pub fn chunks(&self) -> &[Vec<usize>] {
        &self.grid.chunks
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.grid.ndim()
    }

    /// Number of blocks.
    pub fn nblocks(&self) -> usize {
        self.grid.nblocks()
    }

    /// The graph the array adds its nodes to.
    pub fn graph(&self) -> &'g Graph {
        self.g
    }

    /// The node of block `b` (a lazy array's block is made by a new root node: the registered
    /// task `generate` for an array of data, else a closure).
    fn block_node(&self, b: usize) -> Delayed<Block> {
        match &self.src {
            Src::Blocks(v) => v[b],
            Src::Lazy(_, Ok(expr)) => {
                let (start, shape) = self.grid.block(b);
                tasks::generate::delayed(self.g, Expr::clone(expr), start, shape)
            }
            Src::Lazy(fill, Err(step)) => {
                let (start, shape) = self.grid.block(b);
                let fill = fill.clone();
                self.g.try_local_all(
                    step,
                    move |_: Vec<Block>| ops::generate_block(&fill, &start, &shape),
                    Vec::new(),
                )
            }
        }
    }

    /// One handle per block, row-major over the block grid.
    pub fn blocks(&self) -> Vec<Delayed<Block>> {
        (0..self.grid.nblocks())
            .map(|b| self.block_node(b))
            .collect()
    }

    /// The same values as one node per block: a lazy array's blocks are made once and shared
    /// by whatever reads them afterwards.
    pub fn materialize(&self) -> Self {
        Array {
            g: self.g,
            grid: self.grid.clone(),
            src: Src::Blocks(self.blocks()),
        }
    }

    /// The whole array, assembled from its blocks.
    pub fn compute(&self, scheduler: Scheduler<'_>) -> Result<ArrayD<f64>, Error> {
        let blocks = crate::compute(self.g, scheduler, self.blocks())?;
        let mut out = ArrayD::zeros(IxDyn(&self.grid.shape));
        for (b, block) in blocks.iter().enumerate() {
            let (start, shape) = self.grid.block(b);
            out.slice_each_axis_mut(|ax| {
                let i = ax.axis.index();
                Slice::from(start[i]..start[i] + shape[i])
            })
            .assign(&**block);
        }
        Ok(out)
    }

    /// A picture of the graph [`compute`](Self::compute) runs, one box per operation whatever
    /// the size (`array-from-fn`, `lovage.array.map`, `lovage.array.regrid`,
    /// `lovage.array.matmul`, …), each labelled with its node count, and one edge per pair of
    /// operations carrying its count. It adds the block nodes `compute` would (a lazy array's
    /// steps fuse into its blocks); to draw a reduction instead, pass its handle to
    /// [`Graph::grouped_picture`].
    pub fn picture(&self) -> Result<Picture, Error> {
        Ok(self.g.grouped_picture(&self.blocks())?)
    }

    /// [`picture`](Self::picture) in Graphviz's DOT language.
    pub fn to_dot(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_dot())
    }

    /// [`picture`](Self::picture) as SVG, laid out here (no Graphviz needed).
    pub fn to_svg(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_svg())
    }

    /// `f` applied to every value. On a lazy array this adds no node.
    pub fn map(&self, f: impl Fn(f64) -> f64 + Send + Sync + 'static) -> Self {
        match &self.src {
            Src::Lazy(fill, _) => {
                let fill = fill.clone();
                Self::lazy(
                    self.g,
                    self.grid.clone(),
                    Arc::new(move |start: &[usize], out: &mut [f64]| {
                        fill(start, out);
                        out.iter_mut().for_each(|x| *x = f(*x));
                    }),
                    "array-map",
                )
            }
            Src::Blocks(blocks) => {
                let f = Arc::new(f);
                let blocks = blocks
                    .iter()
                    .map(|&b| {
                        let f = f.clone();
                        self.g.try_local_all(
                            "array-map",
                            move |v: Vec<Block>| {
                                let a = v.first().ok_or_else(|| internal("map lost its block"))?;
                                Ok(Block::new(a.mapv(|x| f(x))))
                            },
                            vec![b],
                        )
                    })
                    .collect();
                self.with_blocks(self.grid.clone(), blocks)
            }
        }
    }

    fn with_blocks(&self, grid: Grid, blocks: Vec<Delayed<Block>>) -> Self {
        Array {
            g: self.g,
            grid,
            src: Src::Blocks(blocks),
        }
    }

    /// `f(a, b)` element-wise, the two arrays broadcast against each other as NumPy does
    /// (`(n, m)` with `(m,)`, `(n, 1)` with `(1, m)`, …; see [`zip`](Array::zip)). Two lazy
    /// arrays stay lazy; otherwise one closure node per block (local schedulers only).
    pub fn zip_with(
        &self,
        other: &Array<'g>,
        f: impl Fn(f64, f64) -> f64 + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let (grid, a, b) = self.broadcast_with(other)?;
        if let (Src::Lazy(fa, _), Src::Lazy(fb, _)) = (&a.src, &b.src) {
            let nd = grid.ndim();
            let fa = ops::broadcast_fill(fa.clone(), a.grid.shape.clone(), nd);
            let fb = ops::broadcast_fill(fb.clone(), b.grid.shape.clone(), nd);
            return Ok(Self::lazy(
                self.g,
                grid,
                Arc::new(move |start: &[usize], out: &mut [f64]| {
                    let mut tmp = [0f64; PIECE];
                    let tmp = &mut tmp[..out.len()];
                    fa(start, out);
                    fb(start, tmp);
                    out.iter_mut()
                        .zip(tmp.iter())
                        .for_each(|(x, y)| *x = f(*x, *y));
                }),
                "array-zip-with",
            ));
        }
        let f = Arc::new(f);
        Ok(Self::zip_blocks(grid, &a, &b, |g, shape, x, y| {
            let f = f.clone();
            g.try_local_all(
                "array-zip",
                move |v: Vec<Block>| match v.as_slice() {
                    [x, y] => ops::zip_blocks(|p, q| f(p, q), &shape, x, y),
                    _ => Err(internal("zip lost a block")),
                },
                vec![x, y],
            )
        }))
    }

    /// Element-wise `self op other`, the two arrays broadcast against each other as NumPy
    /// does: shapes aligned at their last axes, each pair of lengths equal or one of them 1
    /// (a missing axis counts as 1), so `(n, m) + (m,)` adds a row to every row and
    /// `(n, 1) + (1, m)` is an outer sum. Shapes that do not broadcast are an `Error::Input`
    /// naming both. The result is chunked as the larger operand (by number of values; this
    /// one when they are as large) along its axes, as the other where only the other has the
    /// axis: the smaller operand is the one rechunked to match.
    ///
    /// Between arrays built from data (`random`, `full`, and data steps on them) the result
    /// stays a lazy expression; with a node-backed operand it is one registered task per
    /// block (both run on every scheduler). With an operand made by a closure it is a
    /// closure (local schedulers only).
    pub fn zip(&self, op: Op, other: &Array<'g>) -> Result<Self, Error> {
        let (grid, a, b) = self.broadcast_with(other)?;
        if let (Some(ea), Some(eb)) = (a.expr(), b.expr()) {
            let ea = ea.broadcast(&a.grid.shape, &grid.shape);
            let eb = eb.broadcast(&b.grid.shape, &grid.shape);
            return Ok(Self::lazy_expr(
                self.g,
                grid,
                Expr::Zip {
                    op,
                    a: Box::new(ea),
                    b: Box::new(eb),
                },
            ));
        }
        if matches!(a.src, Src::Lazy(..)) && matches!(b.src, Src::Lazy(..)) {
            return self.zip_with(other, move |x, y| op.apply(x, y));
        }
        Ok(Self::zip_blocks(grid, &a, &b, |g, shape, x, y| {
            tasks::zip::delayed(g, op, shape, x, y)
        }))
    }

    /// The result's grid of `self ⊕ other` under broadcasting, and each operand with its own
    /// shape but chunked to match it (a lazy operand is only given the new grid; a
    /// node-backed one is rechunked when its chunks differ).
    fn broadcast_with(&self, other: &Array<'g>) -> Result<(Grid, Array<'g>, Array<'g>), Error> {
        let shape = ops::broadcast_shape(&self.grid.shape, &other.grid.shape)?;
        let nd = shape.len();
        // The chunks along result axis `i` of an operand that has that axis unbroadcast.
        let chunks_of = |x: &Array<'g>, i: usize| {
            let j = (i + x.ndim()).checked_sub(nd)?;
            (x.grid.shape[j] == shape[i]).then(|| x.grid.chunks[j].clone())
        };
        // Each axis is chunked as the larger operand has it (by number of values; this one
        // when they are as large), so the smaller one is what is rechunked.
        let size = |x: &Array<'g>| x.grid.shape.iter().product::<usize>();
        let (first, second) = if size(other) > size(self) {
            (other, self)
        } else {
            (self, other)
        };
        let chunks: Vec<Vec<usize>> = (0..nd)
            .map(|i| {
                chunks_of(first, i)
                    .or_else(|| chunks_of(second, i))
                    .unwrap_or_else(|| vec![shape[i]])
            })
            .collect();
        let grid = Grid { shape, chunks };
        let align = |x: &Array<'g>| {
            let lead = nd - x.ndim();
            let chunks: Vec<Vec<usize>> = x
                .grid
                .shape
                .iter()
                .enumerate()
                .map(|(j, &n)| {
                    if n == grid.shape[j + lead] {
                        grid.chunks[j + lead].clone()
                    } else {
                        vec![n]
                    }
                })
                .collect();
            if chunks == x.grid.chunks {
                return x.clone();
            }
            let aligned = Grid {
                shape: x.grid.shape.clone(),
                chunks,
            };
            match &x.src {
                // A lazy array is a function of the global index: any grid will do.
                Src::Lazy(..) => Array {
                    g: x.g,
                    grid: aligned,
                    src: x.src.clone(),
                },
                Src::Blocks(_) => x.regrid(aligned, vec![0; x.ndim()]),
            }
        };
        let (a, b) = (align(self), align(other));
        Ok((grid, a, b))
    }

    /// One node per block of `grid` made by `node(graph, block shape, a's block, b's block)`
    /// from operands aligned to it by [`broadcast_with`](Array::broadcast_with): an operand's
    /// block is the one at the same grid position, at 0 along the axes it is broadcast on.
    fn zip_blocks(
        grid: Grid,
        a: &Array<'g>,
        b: &Array<'g>,
        node: impl Fn(&'g Graph, Vec<usize>, Delayed<Block>, Delayed<Block>) -> Delayed<Block>,
    ) -> Self {
        let nd = grid.ndim();
        let (ablocks, bblocks) = (a.blocks(), b.blocks());
        let pick = |x: &Array<'g>, blocks: &[Delayed<Block>], pos: &[usize]| {
            let lead = nd - x.ndim();
            let q: Vec<usize> = x
                .grid
                .shape
                .iter()
                .enumerate()
                .map(|(j, &n)| {
                    if n == grid.shape[j + lead] {
                        pos[j + lead]
                    } else {
                        0
                    }
                })
                .collect();
            blocks[x.grid.number(&q)]
        };
        let out = (0..grid.nblocks())
            .map(|ob| {
                let pos = grid.position(ob);
                let (_, shape) = grid.block(ob);
                let x = pick(a, &ablocks, &pos);
                let y = pick(b, &bblocks, &pos);
                node(a.g, shape, x, y)
            })
            .collect();
        a.with_blocks(grid, out)
    }

    /// Element-wise `self op v` (`v op self` with [`scalar_left`](Array::scalar_left)). On an
    /// array built from data it stays data (every scheduler); otherwise a closure like `map`.
    pub fn scalar(&self, op: Op, v: f64) -> Self {
        self.scalar_on(op, v, false)
    }

    /// Element-wise `v op self` (`2.0 - x`, `1.0 / x`).
    pub fn scalar_left(&self, op: Op, v: f64) -> Self {
        self.scalar_on(op, v, true)
    }

    fn scalar_on(&self, op: Op, v: f64, left: bool) -> Self {
        match self.expr() {
            Some(e) => Self::lazy_expr(
                self.g,
                self.grid.clone(),
                Expr::Scalar {
                    op,
                    value: v.to_bits(),
                    left,
                    of: Box::new(e.clone()),
                },
            ),
            None => self.step(Step::Scalar {
                op,
                value: v.to_bits(),
                left,
            }),
        }
    }

    /// `f` of every value: like `map`, but data, so an array built from data stays so.
    pub fn apply(&self, f: Func) -> Self {
        match self.expr() {
            Some(e) => Self::lazy_expr(
                self.g,
                self.grid.clone(),
                Expr::Map {
                    f,
                    of: Box::new(e.clone()),
                },
            ),
            None => self.step(Step::Map(f)),
        }
    }

    /// An element-wise step as data on an array that is not an expression: a registered task
    /// per block of a node-backed array; on a lazy array made by a closure, a closure too.
    fn step(&self, step: Step) -> Self {
        match &self.src {
            Src::Blocks(blocks) => {
                let out = blocks
                    .iter()
                    .map(|&b| tasks::map::delayed(self.g, step, b))
                    .collect();
                self.with_blocks(self.grid.clone(), out)
            }
            Src::Lazy(..) => self.map(move |x| step.apply(x)),
        }
    }

    /// Element-wise `self + other`.
    pub fn add(&self, other: &Array<'g>) -> Result<Self, Error> {
        self.zip(Op::Add, other)
    }
    /// Element-wise `self - other`.
    pub fn sub(&self, other: &Array<'g>) -> Result<Self, Error> {
        self.zip(Op::Sub, other)
    }
    /// Element-wise `self * other`.
    pub fn mul(&self, other: &Array<'g>) -> Result<Self, Error> {
        self.zip(Op::Mul, other)
    }
    /// Element-wise `self / other` (IEEE: `x / 0` is ±inf or NaN, as NumPy gives).
    pub fn div(&self, other: &Array<'g>) -> Result<Self, Error> {
        self.zip(Op::Div, other)
    }

    /// The values at `ranges` (one `start..end` per axis, step 1); the result's chunks are
    /// this array's cut at the range.
    pub fn slice(&self, ranges: &[Range<usize>]) -> Result<Self, Error> {
        if ranges.len() != self.ndim() {
            return Err(Error::Input(format!(
                "slice {ranges:?} has {} ranges for an array of {} axes",
                ranges.len(),
                self.ndim()
            )));
        }
        for (axis, (r, &n)) in ranges.iter().zip(&self.grid.shape).enumerate() {
            if r.start > r.end || r.end > n {
                return Err(Error::Input(format!(
                    "slice {r:?} is out of bounds on axis {axis} of length {n}"
                )));
            }
        }
        let mut chunks = Vec::new();
        for (axis, r) in ranges.iter().enumerate() {
            let offs = self.grid.offsets(axis);
            let mut c: Vec<usize> = offs
                .windows(2)
                .map(|w| w[1].min(r.end).saturating_sub(w[0].max(r.start)))
                .filter(|&len| len > 0)
                .collect();
            if c.is_empty() {
                c.push(0);
            }
            chunks.push(c);
        }
        let grid = Grid {
            shape: ranges.iter().map(|r| r.end - r.start).collect(),
            chunks,
        };
        let offset: Vec<usize> = ranges.iter().map(|r| r.start).collect();
        Ok(self.regrid(grid, offset))
    }

    /// The same values in blocks of `chunks` (the last of an axis ragged).
    pub fn rechunk(&self, chunks: &[usize]) -> Result<Self, Error> {
        let grid = Grid::regular(&self.grid.shape, chunks)?;
        Ok(self.regrid(grid, vec![0; self.ndim()]))
    }

    /// An array on `grid` whose value at `i` is this one's at `i + offset`. Lazy stays lazy;
    /// otherwise each new block gathers the blocks it overlaps.
    fn regrid(&self, grid: Grid, offset: Vec<usize>) -> Self {
        let blocks = match &self.src {
            Src::Lazy(fill, origin) => {
                let step = match origin {
                    Ok(e) => {
                        let of = Box::new(Expr::clone(e));
                        return Self::lazy_expr(self.g, grid, Expr::Shift { offset, of });
                    }
                    Err(step) => *step,
                };
                let fill = fill.clone();
                return Self::lazy(
                    self.g,
                    grid,
                    Arc::new(move |start: &[usize], out: &mut [f64]| {
                        let at: Vec<usize> =
                            start.iter().zip(&offset).map(|(a, b)| a + b).collect();
                        fill(&at, out);
                    }),
                    step,
                );
            }
            Src::Blocks(blocks) => blocks,
        };
        let out = (0..grid.nblocks())
            .map(|b| {
                let (ostart, oshape) = grid.block(b);
                // The source region, and the source blocks it overlaps (per axis, then all
                // combinations).
                let lo: Vec<usize> = ostart.iter().zip(&offset).map(|(a, b)| a + b).collect();
                let per_axis: Vec<Vec<usize>> = (0..self.ndim())
                    .map(|axis| {
                        let offs = self.grid.offsets(axis);
                        let (a, z) = (lo[axis], lo[axis] + oshape[axis]);
                        (0..offs.len() - 1)
                            .filter(|&c| offs[c] < z && offs[c + 1] > a)
                            .collect()
                    })
                    .collect();
                let mut sources = Vec::new();
                let mut starts = Vec::new();
                let total: usize = per_axis.iter().map(Vec::len).product();
                for k in 0..total {
                    let pick = grid::unravel(k, &per_axis.iter().map(Vec::len).collect::<Vec<_>>());
                    let pos: Vec<usize> = pick.iter().zip(&per_axis).map(|(&i, v)| v[i]).collect();
                    let n = self.grid.number(&pos);
                    sources.push(blocks[n]);
                    starts.push(self.grid.block(n).0);
                }
                tasks::regrid::delayed(self.g, oshape, lo, starts, sources)
            })
            .collect();
        self.with_blocks(grid, out)
    }

    /// `f` on every block; it must return a block of the same shape (a task error names the
    /// block otherwise).
    pub fn map_blocks(
        &self,
        f: impl Fn(ArrayViewD<'_, f64>) -> ArrayD<f64> + Send + Sync + 'static,
    ) -> Self {
        let f = Arc::new(f);
        let blocks = (0..self.grid.nblocks())
            .map(|b| {
                let f = f.clone();
                self.g.try_local_all(
                    "array-map-blocks",
                    move |v: Vec<Block>| {
                        let a = v
                            .first()
                            .ok_or_else(|| internal("map_blocks lost its block"))?;
                        let out = f(a.view());
                        if out.shape() != a.shape() {
                            return Err(crate::data_error(format!(
                                "map_blocks: block {b} has shape {:?} but the function returned \
                                 shape {:?}",
                                a.shape(),
                                out.shape()
                            )));
                        }
                        Ok(Block::new(out))
                    },
                    vec![self.block_node(b)],
                )
            })
            .collect();
        self.with_blocks(self.grid.clone(), blocks)
    }

    /// The transpose (axes reversed; Dask's `.T`).
    pub fn t(&self) -> Self {
        let n = self.grid.nblocks();
        let grid = Grid {
            shape: self.grid.shape.iter().rev().copied().collect(),
            chunks: self.grid.chunks.iter().rev().cloned().collect(),
        };
        let mut blocks = Vec::with_capacity(n);
        for b in 0..n {
            let mut pos = grid.position(b);
            pos.reverse();
            let src = self.block_node(self.grid.number(&pos));
            blocks.push(tasks::transpose::delayed(self.g, src));
        }
        self.with_blocks(grid, blocks)
    }
}
