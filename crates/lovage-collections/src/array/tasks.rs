//! The array operations as registered tasks (`lovage.array.*`), so an array built from data
//! (`random`, `full`, `zeros`, `ones`, and `scalar`/`apply`/`zip`/slicing/`rechunk` on them)
//! reduces on a process pool and on a broker's workers as on the local schedulers, with the
//! same bits: every scheduler runs these same functions (the local ones call them directly,
//! without encoding anything).
//!
//! Arguments are data: the array's expression and a block's place (a few dozen bytes), the
//! partials (six integers each), never a block. A block is generated and folded in the task
//! that needs it, so a billion-element mean sends 100 small calls and a small tree.

use lovage_core::{Registry, TaskError};

use super::expr::Expr;
use super::reduce::{lazy_partial, Acc, Kind, Stat};
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

/// The names of the built-in collection tasks.
pub const NAMES: [&str; 4] = [partial::NAME, combine::NAME, stat::NAME, index::NAME];

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
    ]);
    let registry = Registry::global();
    for name in NAMES {
        registry.get(name)?;
    }
    Ok(&NAMES)
}
