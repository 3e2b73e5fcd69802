//! Reduction trees shared by bags and arrays: partials merged `split_every` at a time.

use std::sync::Arc;

use lovage_graph::{Delayed, Graph};

use crate::internal;

/// How many partials a combining node merges by default (Dask's `split_every` default).
pub const SPLIT_EVERY: usize = 8;

/// Merges one partial into an accumulator.
type Merge<A> = Arc<dyn Fn(&mut A, &A) + Send + Sync>;

/// Merges partials in groups of `split_every` until one is left. With no partial at all the
/// result is `init()`.
pub(crate) fn tree<A: Send + Sync + 'static>(
    g: &Graph,
    mut level: Vec<Delayed<Arc<A>>>,
    split_every: usize,
    name: &'static str,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    merge: Merge<A>,
) -> Delayed<Arc<A>> {
    let k = split_every.max(2);
    loop {
        if level.len() == 1 {
            if let Some(&one) = level.first() {
                return one;
            }
        }
        level = if level.is_empty() {
            vec![Vec::new()]
        } else {
            level.chunks(k).map(<[_]>::to_vec).collect()
        }
        .into_iter()
        .map(|group| {
            let (init, merge) = (init.clone(), merge.clone());
            g.try_local_all(
                name,
                move |parts: Vec<Arc<A>>| {
                    let mut acc = init();
                    for p in &parts {
                        merge(&mut acc, p);
                    }
                    Ok(Arc::new(acc))
                },
                group,
            )
        })
        .collect();
    }
}

/// The last step of a reduction: `f` on the merged accumulator.
pub(crate) fn finish<A, R>(
    g: &Graph,
    acc: Delayed<Arc<A>>,
    f: impl Fn(&A) -> R + Send + Sync + 'static,
) -> Delayed<R>
where
    A: Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    g.try_local_all(
        "finish",
        move |v: Vec<Arc<A>>| {
            v.first()
                .map(|a| f(a))
                .ok_or_else(|| internal("a reduction lost its input"))
        },
        vec![acc],
    )
}
