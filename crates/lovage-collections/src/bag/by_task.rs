//! Reductions whose functions are registered tasks (`fold_task`, `reduce_task`, `top_k_task`,
//! `group_by_task`, `fold_by_task`): on a bag that is data they are `lovage.bag.*` tasks and
//! run on every scheduler; on a bag with a closure step the same accumulators run in local
//! nodes, so the answers agree.

use std::collections::HashMap;
use std::hash::Hash;

use lovage_graph::Delayed;
use serde::Serialize;
use serde_json::Value;

use super::acc::{fold_items, Agg, Partial};
use super::tasks::{combine_tree, finish_node};
use super::{Bag, Chunk, Data};
use crate::combine::SPLIT_EVERY;
use crate::Error;

/// A value given to a reduction (an initial accumulator) as JSON.
fn json(what: &str, x: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(x)
        .map_err(|e| Error::Input(format!("{what} cannot be written as JSON: {e}")))
}

impl<'g, T: Data> Bag<'g, T> {
    /// One partial per partition, partition `i` computing `agg(i)`: `partial` tasks on a bag
    /// that is data, local nodes (`bag-partial`) running the same accumulator otherwise.
    pub(crate) fn data_partials(&self, agg: impl Fn(usize) -> Agg) -> Vec<Delayed<Partial>> {
        if let Some(plan) = &self.data {
            return plan.partials(self.g, agg);
        }
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (part, agg) = (p.clone(), agg(i));
                self.g.try_local_all(
                    "bag-partial",
                    move |inputs: Vec<Chunk>| {
                        fold_items(agg.clone(), |sink| {
                            part.run(&inputs, &mut |x: T| {
                                sink(serde_json::to_value(&x).map_err(|e| {
                                    crate::data_error(format!(
                                        "a bag item cannot be written as JSON: {e}"
                                    ))
                                })?)
                            })
                        })
                    },
                    p.inputs(),
                )
            })
            .collect()
    }

    /// `agg` over the whole bag: partials, a tree `split_every` wide, and `finish` typed `R`.
    fn by_task<R>(&self, agg: Agg, split_every: usize) -> Delayed<R>
    where
        R: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let partials = self.data_partials(|_| agg.clone());
        let acc = combine_tree(self.g, partials, &agg, split_every);
        finish_node(self.g, agg, acc)
    }

    /// Dask's `fold(binop, combine, initial, split_every)` with registered tasks: each
    /// partition folds its items from `initial` with `binop` (a task of two arguments, the
    /// accumulator `A` and an item `T`, answering an `A`); each combining node folds its
    /// partials (at most `split_every`) from `initial` with `combine` (`A`, `A` → `A`). Runs
    /// on every scheduler when the bag is data. An error: `initial` is not JSON.
    pub fn fold_task<A: Data>(
        &self,
        initial: A,
        binop: &str,
        combine: &str,
        split_every: usize,
    ) -> Result<Delayed<A>, Error> {
        let agg = Agg::Fold {
            binop: binop.to_owned(),
            combine: combine.to_owned(),
            initial: json("fold's initial value", &initial)?,
        };
        Ok(self.by_task(agg, split_every))
    }

    /// Combines all items with the registered task `binop` (`T`, `T` → `T`), within each
    /// partition and then between partitions (`None` for an empty bag). Runs on every
    /// scheduler when the bag is data.
    pub fn reduce_task(&self, binop: &str) -> Delayed<Option<T>> {
        let agg = Agg::Reduce {
            binop: binop.to_owned(),
            combine: binop.to_owned(),
        };
        self.by_task(agg, SPLIT_EVERY)
    }

    /// The `k` largest items, largest first, ties in order of appearance. Runs on every
    /// scheduler when the bag is data; the items compare as their JSON values (numbers,
    /// strings, booleans and lists of them, as Rust orders them; other items fail, naming them).
    pub fn top_k_items(&self, k: usize) -> Delayed<Vec<T>>
    where
        T: Ord,
    {
        self.by_task(Agg::TopK { k, key: None }, SPLIT_EVERY)
    }

    /// The `k` items with the largest answer of the registered task `key` (one argument, a
    /// `T`; answering a number, string, boolean or list of them), largest first, ties in order
    /// of appearance. Runs on every scheduler when the bag is data.
    pub fn top_k_task(&self, k: usize, key: &str) -> Delayed<Vec<T>> {
        let key = Some(key.to_owned());
        self.by_task(Agg::TopK { k, key }, SPLIT_EVERY)
    }

    /// The items grouped by the answer of the registered task `key` (one argument, a `T`,
    /// answering a `K`), each group in order of appearance. Groups merge through the
    /// reduction tree (in memory, no shuffle to disk). Runs on every scheduler when the bag
    /// is data.
    pub fn group_by_task<K: Data + Hash + Eq>(&self, key: &str) -> Delayed<HashMap<K, Vec<T>>> {
        let key = key.to_owned();
        self.by_task(Agg::GroupBy { key }, SPLIT_EVERY)
    }

    /// Dask's `foldby(key, binop, initial, combine)` with registered tasks: per answer of
    /// `key` (`T` → `K`), items fold from `initial` with `binop` (`A`, `T` → `A`); a key's
    /// per-partition accumulators combine with `combine` (`A`, `A` → `A`). Runs on every
    /// scheduler when the bag is data. An error: `initial` is not JSON.
    pub fn fold_by_task<K: Data + Hash + Eq, A: Data>(
        &self,
        key: &str,
        initial: A,
        binop: &str,
        combine: &str,
    ) -> Result<Delayed<HashMap<K, A>>, Error> {
        let agg = Agg::FoldBy {
            key: key.to_owned(),
            binop: binop.to_owned(),
            combine: combine.to_owned(),
            initial: json("fold_by's initial value", &initial)?,
        };
        Ok(self.by_task(agg, SPLIT_EVERY))
    }
}
