//! The array operations as registered tasks (`lovage.array.*`), so an array built from data
//! (`random`, `full`, `zeros`, `ones`, and `scalar`/`apply`/`zip`/slicing/`rechunk` on them)
//! reduces on a process pool and on a broker's workers as on the local schedulers, with the
//! same bits: every scheduler runs these same functions (the local ones call them directly,
//! without encoding anything).
//!
//! A lazy array's reduction sends data only: the array's expression and a block's place (a few
//! dozen bytes), the partials (six integers each), never a block. A block is generated and
//! folded in the task that needs it, so a billion-element mean sends 100 small calls and a
//! small tree.
//!
//! A node-backed array (`from_ndarray`, `materialize`, axis reductions, `t()`, steps on such
//! arrays, `dot`) is one task per block whose result is the block itself ([`Block`]: raw
//! little-endian `f64` bytes behind a small header, encoded once), so it runs on every
//! scheduler too; only closure steps (`map`, `map_blocks`, `from_fn`, `zip_with`) do not.

use lovage_core::{Registry, TaskError};

use super::block::Block;
use super::expr::Expr;
use super::ops::{self, Step};
use super::reduce::{self, lazy_partial, Acc, Kind, Stat};
use crate::data_error;

/// The partial of one block of the lazy array `expr` (of shape `shape`): the block at
/// `start`, of shape `block`, generated piece by piece and folded.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.partial")]
pub(crate) fn partial(
    expr: Expr,
    kind: Kind,
    shape: Vec<usize>,
    start: Vec<usize>,
    block: Vec<usize>,
) -> Acc {
    lazy_partial(&expr.fill(), kind, &shape, &start, &block)
}

/// Partials merged into one (Chan's formulas for the moments).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.combine")]
pub(crate) fn combine(kind: Kind, parts: Vec<Acc>) -> Acc {
    let mut acc = Acc::EMPTY;
    for p in &parts {
        acc.merge(kind, p);
    }
    acc
}

/// The statistic from the merged partial. MessagePack, so a NaN or an infinite answer
/// travels as itself (JSON has neither).
#[lovage_macros::task(
    crate = lovage_core,
    graph = lovage_graph,
    name = "lovage.array.stat",
    codec = "msgpack"
)]
pub(crate) fn stat(which: Stat, what: String, acc: Acc) -> Result<f64, TaskError> {
    which.value(&acc, &what)
}

/// The flat index an argmax/argmin partial found; an empty array fails, as NumPy raises.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.index")]
pub(crate) fn index(what: String, acc: Acc) -> Result<usize, TaskError> {
    if acc.n == 0 {
        return Err(data_error(format!("{what} of an empty array")));
    }
    Ok(acc.at as usize)
}

/// A block given as data (`from_ndarray`): the block is this call's argument.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.data", codec = "msgpack")]
pub(crate) fn data(block: Block) -> Block {
    block
}

/// The block at `start` of shape `shape` of the lazy array `expr`, made whole.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.generate", codec = "msgpack")]
pub(crate) fn generate(
    expr: Expr,
    start: Vec<usize>,
    shape: Vec<usize>,
) -> Result<Block, TaskError> {
    ops::generate_block(&expr.fill(), &start, &shape)
}

/// The partial of a whole block at `start` of an array of shape `shape`.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.block_partial")]
pub(crate) fn block_partial(kind: Kind, shape: Vec<usize>, start: Vec<usize>, block: Block) -> Acc {
    reduce::block_partial(kind, &shape, &start, &block)
}

/// One output block of a reduction along `axis` from the blocks along it.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.axis", codec = "msgpack")]
pub(crate) fn axis(
    stat: Stat,
    along: usize,
    offsets: Vec<usize>,
    what: String,
    blocks: Vec<Block>,
) -> Result<Block, TaskError> {
    reduce::axis_block(stat, along, &offsets, &what, &blocks)
}

/// A block of shape `shape` at global `lo` cut from `blocks` (each at its start in `starts`):
/// slicing and rechunking a node-backed array.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.regrid", codec = "msgpack")]
pub(crate) fn regrid(
    shape: Vec<usize>,
    lo: Vec<usize>,
    starts: Vec<Vec<usize>>,
    blocks: Vec<Block>,
) -> Result<Block, TaskError> {
    ops::regrid_block(&shape, &lo, &starts, &blocks)
}

/// `a op b`, each broadcast to `shape` (NumPy's rules).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.zip", codec = "msgpack")]
pub(crate) fn zip(
    op: super::Op,
    shape: Vec<usize>,
    a: Block,
    b: Block,
) -> Result<Block, TaskError> {
    ops::zip_blocks(|x, y| op.apply(x, y), &shape, &a, &b)
}

/// An element-wise step (a scalar operation or a function) on every value of a block.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.map", codec = "msgpack")]
pub(crate) fn map(step: Step, block: Block) -> Block {
    Block::new(block.mapv(|x| step.apply(x)))
}

/// The block transposed (axes reversed).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.transpose", codec = "msgpack")]
pub(crate) fn transpose(block: Block) -> Block {
    Block::new(block.t().to_owned())
}

/// The matrix product of two blocks (1-D or 2-D), of shape `shape`.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.matmul", codec = "msgpack")]
pub(crate) fn matmul(a: Block, b: Block, shape: Vec<usize>) -> Result<Block, TaskError> {
    ops::matmul_block(&a, &b, &shape)
}

/// The element-wise sum of blocks of one shape (a node of `dot`'s tree).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.add_blocks", codec = "msgpack")]
pub(crate) fn add_blocks(blocks: Vec<Block>) -> Result<Block, TaskError> {
    ops::sum_blocks(&blocks)
}

/// The names of the built-in array tasks.
pub const NAMES: [&str; 18] = [
    partial::NAME,
    combine::NAME,
    stat::NAME,
    index::NAME,
    data::NAME,
    generate::NAME,
    block_partial::NAME,
    axis::NAME,
    regrid::NAME,
    zip::NAME,
    map::NAME,
    transpose::NAME,
    matmul::NAME,
    add_blocks::NAME,
    super::npy::create_file::NAME,
    super::npy::write_block::NAME,
    super::npy::files_done::NAME,
    super::npy::read_block::NAME,
];

/// Makes sure the built-in collection tasks are in this process's registry and says which
/// are: a worker that runs arrays calls this once at start (`lovage worker` does), so the
/// linker cannot leave this module out of a binary that otherwise never names it.
pub fn register() -> Result<&'static [&'static str], TaskError> {
    // Naming the bodies keeps their object code, and the registrations beside it, linked.
    std::hint::black_box([
        partial::__invoke as *const () as usize,
        combine::__invoke as *const () as usize,
        stat::__invoke as *const () as usize,
        index::__invoke as *const () as usize,
        data::__invoke as *const () as usize,
        generate::__invoke as *const () as usize,
        block_partial::__invoke as *const () as usize,
        axis::__invoke as *const () as usize,
        regrid::__invoke as *const () as usize,
        zip::__invoke as *const () as usize,
        map::__invoke as *const () as usize,
        transpose::__invoke as *const () as usize,
        matmul::__invoke as *const () as usize,
        add_blocks::__invoke as *const () as usize,
    ]);
    super::npy::keep_linked();
    let registry = Registry::global();
    for name in NAMES {
        registry.get(name)?;
    }
    Ok(&NAMES)
}
