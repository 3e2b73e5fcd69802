//! `sort` and `set_index` by sampled range partitioning, and `repartition` (the closures,
//! for frames that are not data; a frame of data runs `crate::sort_tasks`).
//!
//! A sort samples the key columns of every partition, picks `n - 1` boundary rows from the
//! sorted sample, sends each row to the range it falls in (an exchange), and sorts each range
//! in Polars. Rows equal to a boundary go to the range after it in every partition, so equal
//! keys meet in one range; pieces are gathered in input order and sorted stably, so the
//! result is the stable sort of the whole frame.

use std::sync::Arc;

use lovage_graph::Delayed;
use polars::prelude::*;

use crate::frame::{concat_frames, Frame, Part, Source};
use crate::shuffle::{exchange, split_by, Splitter};
use crate::sort_tasks::{repartition_tasks, sort_tasks};
use crate::{polars_error, Error};

/// Sample rows taken per partition for each output range: enough that ranges come out
/// within a few tens of percent of each other on skew-free keys.
pub(crate) const SAMPLES_PER_RANGE: usize = 20;

const ROW: &str = "__lovage_row";
const MARK: &str = "__lovage_mark";

/// The sort order of `keys`: nulls last, as the boundaries and the final sort both use.
/// Data, so the sort's registered tasks (`crate::sort_tasks`) carry it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Order {
    pub(crate) keys: Vec<PlSmallStr>,
    pub(crate) descending: Vec<bool>,
}

impl Order {
    /// Options for sorting by the keys, then by `extra` more ascending columns.
    fn options(&self, extra: usize) -> SortMultipleOptions {
        let n = self.keys.len() + extra;
        SortMultipleOptions::default()
            .with_order_descending_multi(
                self.descending
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(false, extra)),
            )
            .with_nulls_last_multi(std::iter::repeat_n(true, n))
            .with_maintain_order(true)
    }

    pub(crate) fn sort(&self, df: &DataFrame) -> PolarsResult<DataFrame> {
        df.sort(self.keys.clone(), self.options(0))
    }

    /// Up to `k` rows of `df`'s key columns, drawn at random (same seed, same rows).
    pub(crate) fn sample(&self, df: &DataFrame, k: usize, seed: u64) -> PolarsResult<DataFrame> {
        let keys = df.select(self.keys.iter().cloned())?;
        if keys.height() <= k {
            return Ok(keys);
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let idx: Vec<IdxSize> = (0..k)
            .map(|_| rng.usize(0..keys.height()) as IdxSize)
            .collect();
        keys.take(&IdxCa::from_vec(PlSmallStr::EMPTY, idx))
    }

    /// `n - 1` boundary rows, evenly spaced through the sorted `sample` (fewer when the
    /// sample is empty).
    pub(crate) fn boundaries(&self, sample: DataFrame, n: usize) -> PolarsResult<DataFrame> {
        let sorted = self.sort(&sample)?;
        let h = sorted.height();
        if h == 0 {
            return Ok(sorted);
        }
        let idx: Vec<IdxSize> = (1..n).map(|j| (j * h / n).min(h - 1) as IdxSize).collect();
        sorted.take(&IdxCa::from_vec(PlSmallStr::EMPTY, idx))
    }

    /// For each row of `df`, the number of boundary rows at or before it in the sort order:
    /// sorts the keys with the boundaries mixed in (a boundary before rows equal to it) and
    /// counts the boundaries passed.
    pub(crate) fn ranges(&self, df: &DataFrame, bounds: &DataFrame) -> PolarsResult<Vec<usize>> {
        let keys = df.select(self.keys.iter().cloned())?;
        let tag = |mut f: DataFrame, mark: u32| -> PolarsResult<DataFrame> {
            let h = f.height();
            f.with_column(Column::new(
                ROW.into(),
                (0..h as IdxSize).collect::<Vec<_>>(),
            ))?;
            f.with_column(Column::new(MARK.into(), vec![mark; h]))?;
            Ok(f)
        };
        let mut mixed = tag(keys, 1)?;
        mixed.vstack_mut(&tag(bounds.clone(), 0)?)?;
        let mut by = self.keys.clone();
        by.push(MARK.into());
        let mixed = mixed.sort(by, self.options(1))?;
        let rows = mixed.column(ROW)?.idx()?;
        let marks = mixed.column(MARK)?.u32()?;
        let mut out = vec![0; df.height()];
        let mut passed = 0;
        for (row, mark) in rows.into_no_null_iter().zip(marks.into_no_null_iter()) {
            if mark == 0 {
                passed += 1;
            } else {
                out[row as usize] = passed;
            }
        }
        Ok(out)
    }
}

impl<'g> Frame<'g> {
    /// The frame sorted by the `by` columns (`descending` per column, or one flag for all;
    /// nulls last), in as many partitions as now: partition `j` holds the `j`th range of
    /// keys, each sorted, so the partitions concatenated are the stable sort of the frame.
    /// The ranges come from a random sample of the keys (Dask's `sort_values`). A frame of
    /// data sorts with registered tasks, so on every scheduler (`crate::sort_tasks`).
    pub fn sort(&self, by: &[&str], descending: &[bool]) -> Result<Frame<'g>, Error> {
        if by.is_empty() {
            return Err(Error::Input("sort: no column given".into()));
        }
        if descending.len() != 1 && descending.len() != by.len() {
            return Err(Error::Input(format!(
                "sort: {} descending flags for {} columns; give one or one per column",
                descending.len(),
                by.len()
            )));
        }
        for c in by {
            if self.schema.get(c).is_none() {
                return Err(Error::Input(format!("sort: no column {c}")));
            }
        }
        let order = Arc::new(Order {
            keys: by.iter().map(|c| (*c).into()).collect(),
            descending: (0..by.len())
                .map(|i| descending[i.min(descending.len() - 1)])
                .collect(),
        });
        let g = self.g;
        let n = self.npartitions().max(1);
        let key_schema: SchemaRef = Arc::new(
            by.iter()
                .map(|c| {
                    let t = self.schema.get(c).cloned().unwrap_or(DataType::Null);
                    Field::new((*c).into(), t)
                })
                .collect(),
        );
        // A frame of data: registered tasks, so every scheduler runs it.
        if let Some(parts) = self.data_parts() {
            let order = (*order).clone();
            let sources = sort_tasks(g, parts, order, n, &self.schema, &key_schema)
                .into_iter()
                .map(Source::Rows)
                .collect();
            return Ok(Frame::new(g, sources, self.schema.clone()));
        }
        let parts = self.partitions();
        let samples: Vec<Delayed<DataFrame>> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let order = order.clone();
                g.try_local_all(
                    "sort sample",
                    move |v: Vec<DataFrame>| {
                        let df = v.into_iter().next().unwrap_or_default();
                        order
                            .sample(&df, SAMPLES_PER_RANGE * n, i as u64)
                            .map_err(|e| polars_error("sampling sort keys", e))
                    },
                    vec![*p],
                )
            })
            .collect();
        let bounds = {
            let order = order.clone();
            g.try_local_all(
                "sort boundaries",
                move |v: Vec<DataFrame>| {
                    let sample = concat_frames(v, &key_schema)?;
                    order
                        .boundaries(sample, n)
                        .map_err(|e| polars_error("choosing sort boundaries", e))
                },
                samples,
            )
        };
        let with_bounds: Vec<Delayed<(DataFrame, DataFrame)>> =
            parts.into_iter().map(|p| g.tuple((p, bounds))).collect();
        let split: Splitter<(DataFrame, DataFrame)> = {
            let order = order.clone();
            Arc::new(move |(df, bounds): (DataFrame, DataFrame)| {
                let ranges = order
                    .ranges(&df, &bounds)
                    .map_err(|e| polars_error("splitting a partition into ranges", e))?;
                split_by(&df, n, ranges.into_iter())
            })
        };
        let sorted = exchange(g, with_bounds, n, split, self.schema.clone())
            .into_iter()
            .map(|r| {
                let order = order.clone();
                let node = g.try_local_all(
                    "sort range",
                    move |v: Vec<DataFrame>| {
                        let df = v.into_iter().next().unwrap_or_default();
                        order
                            .sort(&df)
                            .map_err(|e| polars_error("sorting a range", e))
                    },
                    vec![r],
                );
                Source::Node(node)
            })
            .collect();
        Ok(Frame::new(g, sorted, self.schema.clone()))
    }

    /// Polars frames have no index: `set_index(c)` is [`sort`](Frame::sort) by `c`
    /// ascending, after which partition `j` holds the `j`th range of `c` (Dask's divisions).
    pub fn set_index(&self, column: &str) -> Result<Frame<'g>, Error> {
        self.sort(&[column], &[false])
    }

    /// The same rows in the same order in `n` partitions of nearly equal height (at least
    /// one): each partition's rows go to the output partitions their global positions fall
    /// in, once every partition's height is known: from the metadata when every partition's
    /// is known (Parquet footers, rows in memory, a plan that keeps every row), so each
    /// partition is read once; otherwise counted first (read twice). Registered tasks for a
    /// frame of data, so on every scheduler.
    pub fn repartition(&self, n: usize) -> Frame<'g> {
        let n = n.max(1);
        let g = self.g;
        let known: Option<Vec<usize>> = self.parts.iter().map(Part::known_rows).collect();
        // A frame of data: registered tasks, so every scheduler runs it.
        if let Some(parts) = self.data_parts() {
            let sources = repartition_tasks(g, parts, n, &self.schema, known)
                .into_iter()
                .map(Source::Rows)
                .collect();
            return Frame::new(g, sources, self.schema.clone());
        }
        let parts = self.partitions();
        let heights = match known {
            Some(heights) => g.value(heights),
            None => {
                let heights: Vec<Delayed<usize>> = parts
                    .iter()
                    .map(|p| {
                        g.try_local_all(
                            "height",
                            |v: Vec<DataFrame>| Ok(v.first().map_or(0, DataFrame::height)),
                            vec![*p],
                        )
                    })
                    .collect();
                g.collect(heights)
            }
        };
        let sliced: Vec<Delayed<Arc<Vec<DataFrame>>>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let pair = g.tuple((p, heights));
                g.try_local_all(
                    "repartition split",
                    move |v: Vec<(DataFrame, Vec<usize>)>| {
                        let (df, heights) = v.into_iter().next().unwrap_or_default();
                        Ok(Arc::new(slice_for(&df, &heights, i, n)))
                    },
                    vec![pair],
                )
            })
            .collect();
        let sources = (0..n)
            .map(|j| {
                let schema = self.schema.clone();
                Source::Node(g.try_local_all(
                    "repartition gather",
                    move |v: Vec<Arc<Vec<DataFrame>>>| {
                        concat_frames(v.iter().map(|s| s[j].clone()).collect(), &schema)
                    },
                    sliced.clone(),
                ))
            })
            .collect();
        Frame::new(g, sources, self.schema.clone())
    }
}

/// Partition `i` (of the heights `heights`) cut into the pieces bound for each of `n`
/// equal output partitions.
pub(crate) fn slice_for(df: &DataFrame, heights: &[usize], i: usize, n: usize) -> Vec<DataFrame> {
    let total: usize = heights.iter().sum();
    let start: usize = heights[..i].iter().sum();
    // Output j holds global rows [bound(j), bound(j + 1)).
    let bound = |j: usize| j * (total / n) + j.min(total % n);
    (0..n)
        .map(|j| {
            let lo = bound(j).clamp(start, start + df.height());
            let hi = bound(j + 1).clamp(start, start + df.height());
            df.slice((lo - start) as i64, hi - lo)
        })
        .collect()
}
