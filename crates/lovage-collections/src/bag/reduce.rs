//! Reductions: one node per partition running its steps into an accumulator, then a tree of
//! nodes merging `split_every` partials at a time.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use lovage_graph::Delayed;

use super::tasks::{combine_tree, finish_node, Agg};
use super::{Bag, Chunk, Data, Item};
use crate::combine::{finish, tree};

pub use crate::combine::SPLIT_EVERY;

impl<'g, T: Item> Bag<'g, T> {
    /// The general reduction: every partition folds its items into `init()` with `step`, then
    /// partials merge pairwise-by-groups with `merge` (a tree of `split_every`).
    pub fn aggregate<A: Send + Sync + 'static>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        step: impl Fn(&mut A, T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, &A) + Send + Sync + 'static,
        split_every: usize,
    ) -> Delayed<Arc<A>> {
        let init: Arc<dyn Fn() -> A + Send + Sync> = Arc::new(init);
        let step = Arc::new(step);
        let partials = self
            .parts
            .iter()
            .map(|p| {
                let (part, init, step) = (p.clone(), init.clone(), step.clone());
                self.g.try_local_all(
                    "bag-partial",
                    move |inputs: Vec<Chunk>| {
                        let mut acc = init();
                        part.run(&inputs, &mut |x| {
                            step(&mut acc, x);
                            Ok(())
                        })?;
                        Ok(Arc::new(acc))
                    },
                    p.inputs(),
                )
            })
            .collect();
        tree(
            self.g,
            partials,
            split_every,
            "bag-combine",
            init,
            Arc::new(merge),
        )
    }

    /// Dask's `fold(binop, combine, initial)`: each partition folds from `initial` with
    /// `binop`, partials combine with `combine` (a tree of `split_every`).
    pub fn fold<A: Item>(
        &self,
        initial: A,
        binop: impl Fn(A, T) -> A + Send + Sync + 'static,
        combine: impl Fn(A, A) -> A + Send + Sync + 'static,
        split_every: usize,
    ) -> Delayed<A> {
        let init = initial.clone();
        let acc = self.aggregate(
            move || Some(init.clone()),
            move |acc: &mut Option<A>, x| {
                *acc = acc.take().map(|a| binop(a, x));
            },
            move |acc: &mut Option<A>, other: &Option<A>| {
                if let (Some(a), Some(b)) = (acc.take(), other.clone()) {
                    *acc = Some(combine(a, b));
                }
            },
            split_every,
        );
        finish(self.g, acc, move |a| {
            a.clone().unwrap_or_else(|| initial.clone())
        })
    }

    /// Combines all items with `f` (`None` for an empty bag).
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> Delayed<Option<T>> {
        let f = Arc::new(f);
        let f2 = f.clone();
        let acc = self.aggregate(
            || None,
            move |acc: &mut Option<T>, x| {
                *acc = Some(match acc.take() {
                    Some(a) => f(a, x),
                    None => x,
                });
            },
            move |acc: &mut Option<T>, other: &Option<T>| {
                if let Some(b) = other.clone() {
                    *acc = Some(match acc.take() {
                        Some(a) => f2(a, b),
                        None => b,
                    });
                }
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, |a| a.clone())
    }

    /// The number of items.
    pub fn count(&self) -> Delayed<u64> {
        if let Some(plan) = &self.data {
            return finish_node(self.g, Agg::Count, plan.reduce(self.g, Agg::Count));
        }
        let acc = self.aggregate(|| 0u64, |n, _| *n += 1, |a, b| *a += *b, SPLIT_EVERY);
        finish(self.g, acc, |n| *n)
    }

    /// The smallest item (`None` for an empty bag; items that do not compare are skipped
    /// past, as `PartialOrd` leaves them).
    pub fn min(&self) -> Delayed<Option<T>>
    where
        T: PartialOrd,
    {
        if let Some(plan) = &self.data {
            return (plan.typed.opt)(self.g, Agg::Min, plan.reduce(self.g, Agg::Min));
        }
        self.reduce(|a, b| if b < a { b } else { a })
    }

    /// The largest item (`None` for an empty bag).
    pub fn max(&self) -> Delayed<Option<T>>
    where
        T: PartialOrd,
    {
        if let Some(plan) = &self.data {
            return (plan.typed.opt)(self.g, Agg::Max, plan.reduce(self.g, Agg::Max));
        }
        self.reduce(|a, b| if b > a { b } else { a })
    }

    /// The sum of the items (`T::default()` for an empty bag).
    pub fn sum(&self) -> Delayed<T>
    where
        T: std::ops::Add<Output = T> + Default,
    {
        if let Some(plan) = &self.data {
            return (plan.typed.one)(self.g, Agg::Sum, plan.reduce(self.g, Agg::Sum));
        }
        self.fold(T::default(), |a, b| a + b, |a, b| a + b, SPLIT_EVERY)
    }

    /// The mean of the items as `f64` (NaN for an empty bag).
    pub fn mean(&self) -> Delayed<f64>
    where
        T: Into<f64>,
    {
        if let Some(plan) = &self.data {
            return finish_node(self.g, Agg::Mean, plan.reduce(self.g, Agg::Mean));
        }
        let acc = self.aggregate(
            || (0u64, 0f64),
            |a, x| {
                a.0 += 1;
                a.1 += x.into();
            },
            |a, b| {
                a.0 += b.0;
                a.1 += b.1;
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, |a| a.1 / a.0 as f64)
    }

    /// How many times each distinct item occurs. (Items are [`Data`] so that a bag that is
    /// data counts with registered tasks, on every scheduler.)
    pub fn frequencies(&self) -> Delayed<HashMap<T, u64>>
    where
        T: Hash + Eq + Data,
    {
        if let Some(plan) = &self.data {
            let acc = plan.reduce(self.g, Agg::Frequencies);
            return finish_node(self.g, Agg::Frequencies, acc);
        }
        let acc = self.aggregate(
            HashMap::new,
            |m: &mut HashMap<T, u64>, x| *m.entry(x).or_insert(0) += 1,
            |m, other| {
                for (k, v) in other {
                    *m.entry(k.clone()).or_insert(0) += v;
                }
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, HashMap::clone)
    }

    /// The `k` items with the largest `key`, largest first (ties in order of appearance).
    pub fn top_k<K: Ord + Send + Sync + 'static>(
        &self,
        k: usize,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Delayed<Vec<T>> {
        let key = Arc::new(key);
        let (key1, key2) = (key.clone(), key.clone());
        // Each list stays in order of appearance up to its sorts, and the sort is stable, so
        // ties keep that order whatever the partitioning.
        let acc = self.aggregate(
            Vec::<T>::new,
            move |v, x| {
                v.push(x);
                if v.len() >= 2 * k.max(1) {
                    keep_top(v, k, &*key1);
                }
            },
            move |v, other| {
                v.extend(other.iter().cloned());
                keep_top(v, k, &*key2);
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, move |v| {
            let mut v = v.clone();
            keep_top(&mut v, k, &*key);
            v
        })
    }

    /// The distinct items, in order of first appearance.
    pub fn distinct(&self) -> Delayed<Vec<T>>
    where
        T: Hash + Eq,
    {
        if let Some(plan) = &self.data {
            return (plan.typed.all)(self.g, Agg::Distinct, plan.reduce(self.g, Agg::Distinct));
        }
        let acc = self.aggregate(
            || (Vec::<T>::new(), HashSet::<T>::new()),
            |(order, seen), x| {
                if seen.insert(x.clone()) {
                    order.push(x);
                }
            },
            |(order, seen), (other, _)| {
                for x in other {
                    if seen.insert(x.clone()) {
                        order.push(x.clone());
                    }
                }
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, |a| a.0.clone())
    }

    /// The items grouped by `key`, each group in partition order. Groups are merged through
    /// the reduction tree, so the whole result must fit in memory (no shuffle to disk).
    pub fn group_by<K: Item + Hash + Eq>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Delayed<HashMap<K, Vec<T>>> {
        let acc = self.aggregate(
            HashMap::new,
            move |m: &mut HashMap<K, Vec<T>>, x| m.entry(key(&x)).or_default().push(x),
            |m, other| {
                for (k, v) in other {
                    m.entry(k.clone()).or_default().extend(v.iter().cloned());
                }
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, HashMap::clone)
    }

    /// Dask's `foldby(key, binop, initial, combine)`: per key, items fold from `initial` with
    /// `binop`; per-partition results combine with `combine`.
    pub fn fold_by<K: Item + Hash + Eq, A: Item>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        initial: A,
        binop: impl Fn(A, T) -> A + Send + Sync + 'static,
        combine: impl Fn(A, A) -> A + Send + Sync + 'static,
    ) -> Delayed<HashMap<K, A>> {
        let acc = self.aggregate(
            HashMap::new,
            move |m: &mut HashMap<K, A>, x| {
                let k = key(&x);
                let a = m.remove(&k).unwrap_or_else(|| initial.clone());
                m.insert(k, binop(a, x));
            },
            move |m, other| {
                for (k, b) in other {
                    let v = match m.remove(k) {
                        Some(a) => combine(a, b.clone()),
                        None => b.clone(),
                    };
                    m.insert(k.clone(), v);
                }
            },
            SPLIT_EVERY,
        );
        finish(self.g, acc, HashMap::clone)
    }

    /// The first `n` items of the first `npartitions` partitions (Dask's `take(n,
    /// npartitions=1)`: only those partitions run).
    /// On a bag that is data this is registered tasks, so it runs on every scheduler; a
    /// partition's task stops reading once it has `n` items.
    pub fn take(&self, n: usize, npartitions: usize) -> Delayed<Vec<T>> {
        if let Some(plan) = &self.data {
            let firsts = plan.first(npartitions.max(1));
            let acc = combine_tree(
                self.g,
                firsts.partials(self.g, |_| Agg::Take(n)),
                &Agg::Take(n),
                usize::MAX,
            );
            return (plan.typed.all)(self.g, Agg::Take(n), acc);
        }
        let firsts = Bag {
            g: self.g,
            parts: self
                .parts
                .iter()
                .take(npartitions.max(1))
                .cloned()
                .collect(),
            data: None,
            raw: None,
        };
        let acc = firsts.aggregate(
            Vec::new,
            move |v: &mut Vec<T>, x| {
                if v.len() < n {
                    v.push(x)
                }
            },
            move |v, other| v.extend(other.iter().take(n.saturating_sub(v.len())).cloned()),
            usize::MAX,
        );
        finish(self.g, acc, Vec::clone)
    }
}

/// Keeps the `k` largest by key, largest first (a stable sort: ties keep their order).
fn keep_top<T, K: Ord>(v: &mut Vec<T>, k: usize, key: &dyn Fn(&T) -> K) {
    v.sort_by_key(|x| std::cmp::Reverse(key(x)));
    v.truncate(k);
}

impl<'g> Bag<'g, String> {
    /// How often each word (a run of non-ASCII-whitespace) occurs across the items. On a bag
    /// straight from [`read_text`](super::read_text) it counts over each partition's raw bytes,
    /// keeping words as borrowed slices in a per-partition hash map until the partition ends
    /// (no allocation per line or per occurrence). A bag that is data (`read_text`, task steps)
    /// counts in registered tasks, so on every scheduler.
    pub fn word_frequencies(&self) -> Delayed<HashMap<String, u64>> {
        if let Some(plan) = &self.data {
            return finish_node(self.g, Agg::Words, plan.reduce(self.g, Agg::Words));
        }
        let merge = |m: &mut HashMap<String, u64>, other: &HashMap<String, u64>| {
            if m.is_empty() {
                m.clone_from(other);
                return;
            }
            for (k, v) in other {
                match m.get_mut(k) {
                    Some(n) => *n += v,
                    None => {
                        m.insert(k.clone(), *v);
                    }
                }
            }
        };
        let acc = self.aggregate(
            HashMap::new,
            |m: &mut HashMap<String, u64>, line: String| {
                for w in line.split_ascii_whitespace() {
                    match m.get_mut(w) {
                        Some(n) => *n += 1,
                        None => {
                            m.insert(w.to_string(), 1);
                        }
                    }
                }
            },
            merge,
            SPLIT_EVERY,
        );
        finish(self.g, acc, HashMap::clone)
    }
}

/// Counts the words of `text` (UTF-8, split at ASCII whitespace) with borrowed keys; the error
/// is the byte position of invalid UTF-8.
pub(crate) fn count_words(text: &[u8]) -> Result<HashMap<String, u64>, usize> {
    if let Err(e) = std::str::from_utf8(text) {
        return Err(e.valid_up_to());
    }
    let mut counts: HashMap<&[u8], u64, foldhash::fast::RandomState> = HashMap::default();
    let (mut i, n) = (0usize, text.len());
    while i < n {
        while i < n && text[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < n && !text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i > start {
            *counts.entry(&text[start..i]).or_insert(0) += 1;
        }
    }
    let mut out = HashMap::with_capacity(counts.len());
    for (w, c) in counts {
        // Valid UTF-8 split at ASCII bytes stays valid UTF-8.
        out.insert(String::from_utf8_lossy(w).into_owned(), c);
    }
    Ok(out)
}
