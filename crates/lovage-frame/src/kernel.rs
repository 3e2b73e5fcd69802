//! lovage's own kernels for the partial aggregations Polars 0.55 runs slowest on the seed's
//! workloads, each answering `None` (run Polars' query instead) for a shape it does not
//! cover. Not a query engine: they take a partition already made by Polars and give the
//! partial Polars would give (`Agg::partial`: the same columns, order and types).
//!
//! - **No keys, `min`/`max`:** one pass of eight independent lanes. Polars built without
//!   its nightly `simd` feature reduces one value at a time through a NaN check, a chain
//!   four cycles deep per value. Sums and counts stay Polars' own (`ChunkAgg`).
//! - **One key, `sum`/`mean`/`count`/`len`:** a group id per row, then accumulators indexed
//!   by id, where Polars hashes every row into tables built for any key. Ids come from the
//!   key itself when it is an integer whose range is at most a few times the rows (dense ids,
//!   the null key apart), or from a small hash table of Arrow views when every value is a
//!   string of at most 12 bytes (the whole string sits in its 16-byte view, so the view is
//!   the key and no byte is hashed twice).
//!
//! `LOVAGE_FRAME_KERNELS=off` turns them off, to measure Polars' own paths.

use std::sync::OnceLock;

use polars::prelude::*;
use polars_arrow::array::Array;

use crate::agg::{Agg, Kind};

/// Whether the kernels are used: yes unless `LOVAGE_FRAME_KERNELS=off`.
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LOVAGE_FRAME_KERNELS").map_or(true, |v| v != "off"))
}

/// Whether `aggs` by `keys` may be covered (the column types and values are checked on the
/// data): with no key, any of sum, mean, min, max, count and len; with one key, the same
/// but min and max.
pub(crate) fn covers(keys: &[PlSmallStr], aggs: &[Agg]) -> bool {
    let grouped = matches!(keys.len(), 1);
    enabled()
        && keys.len() <= 1
        && !aggs.is_empty()
        && aggs.iter().all(|a| match a.kind {
            Kind::Sum | Kind::Mean | Kind::Count | Kind::Len => true,
            Kind::Min | Kind::Max => !grouped,
            _ => false,
        })
}

/// The columns the kernels read: the keys, then each aggregated column once (`len` reads
/// none).
pub(crate) fn columns(keys: &[PlSmallStr], aggs: &[Agg]) -> Vec<PlSmallStr> {
    let mut out: Vec<PlSmallStr> = keys.to_vec();
    for a in aggs.iter().filter(|a| a.kind != Kind::Len) {
        if !out.contains(&a.column) {
            out.push(a.column.clone());
        }
    }
    out
}

/// Whether the columns of `schema` that `aggs` by `keys` read have types the kernels take
/// (an `Int64` or `String` key, `Float64` or `Int64` values): checked before a partition is
/// made, so one that can only be Polars' runs as one Polars query.
pub(crate) fn types_fit(schema: &Schema, keys: &[PlSmallStr], aggs: &[Agg]) -> bool {
    let is = |c: &PlSmallStr, ok: &[DataType]| schema.get(c).is_some_and(|t| ok.contains(t));
    keys.iter()
        .all(|k| is(k, &[DataType::Int64, DataType::String]))
        && aggs
            .iter()
            .filter(|a| a.kind != Kind::Len)
            .all(|a| is(&a.column, &[DataType::Float64, DataType::Int64]))
}

/// `df`'s partial aggregation of `aggs` by `keys` (at most one), or `None` when a column's
/// type or the key's values are not a shape the kernels cover, or `df` is empty (Polars
/// gives the empty partial its exact types).
pub(crate) fn partial(df: &DataFrame, keys: &[PlSmallStr], aggs: &[Agg]) -> Option<DataFrame> {
    if df.height() == 0 || !covers(keys, aggs) {
        return None;
    }
    match keys {
        [] => whole(df, aggs),
        [key] => grouped(df, key, aggs),
        _ => None,
    }
}

/// A value column the kernels read.
enum Values<'a> {
    F64(&'a Float64Chunked),
    I64(&'a Int64Chunked),
}

fn values<'a>(df: &'a DataFrame, name: &str) -> Option<Values<'a>> {
    let s = df.column(name).ok()?.as_materialized_series();
    match s.dtype() {
        DataType::Float64 => s.f64().ok().map(Values::F64),
        DataType::Int64 => s.i64().ok().map(Values::I64),
        _ => None,
    }
}

impl Values<'_> {
    fn non_null(&self) -> i64 {
        let (len, nulls) = match self {
            Values::F64(c) => (c.len(), c.null_count()),
            Values::I64(c) => (c.len(), c.null_count()),
        };
        (len - nulls) as i64
    }
}

/// The whole frame's partials: one row.
fn whole(df: &DataFrame, aggs: &[Agg]) -> Option<DataFrame> {
    let mut out: Vec<Column> = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        if a.kind == Kind::Len {
            out.push(Column::new(Agg::slot(i, "n"), [df.height() as i64]));
            continue;
        }
        let v = values(df, &a.column)?;
        let count = || Column::new(Agg::slot(i, "n"), [v.non_null()]);
        match (a.kind, &v) {
            (Kind::Sum, Values::F64(c)) => {
                out.push(Column::new(Agg::slot(i, "s"), [c.sum().unwrap_or(0.0)]))
            }
            (Kind::Sum, Values::I64(c)) => {
                out.push(Column::new(Agg::slot(i, "s"), [c.sum().unwrap_or(0)]))
            }
            (Kind::Mean, _) => {
                let s = match &v {
                    Values::F64(c) => c.sum().unwrap_or(0.0),
                    Values::I64(c) => c
                        .cast(&DataType::Float64)
                        .ok()?
                        .f64()
                        .ok()?
                        .sum()
                        .unwrap_or(0.0),
                };
                out.push(Column::new(Agg::slot(i, "s"), [s]));
                out.push(count());
            }
            (Kind::Count, _) => out.push(count()),
            (Kind::Min | Kind::Max, Values::F64(c)) => {
                let Some((lo, hi)) = min_max_f64(c)? else {
                    // Every value null: Polars' min and max are null.
                    out.push(Column::full_null(slot_of(i, a.kind), 1, &DataType::Float64));
                    continue;
                };
                let v = if a.kind == Kind::Min { lo } else { hi };
                out.push(Column::new(slot_of(i, a.kind), [v]));
            }
            (Kind::Min | Kind::Max, Values::I64(c)) => {
                let Some((lo, hi)) = min_max_i64(c) else {
                    out.push(Column::full_null(slot_of(i, a.kind), 1, &DataType::Int64));
                    continue;
                };
                let v = if a.kind == Kind::Min { lo } else { hi };
                out.push(Column::new(slot_of(i, a.kind), [v]));
            }
            _ => return None,
        }
    }
    DataFrame::new(1, out).ok()
}

fn slot_of(i: usize, kind: Kind) -> PlSmallStr {
    Agg::slot(i, if kind == Kind::Min { "lo" } else { "hi" })
}

/// The smallest and largest of `values` over eight independent lanes (no chain from one
/// value to the next, so the compiler keeps them in vector registers). A NaN is never
/// smaller or larger than a lane, so it is skipped, as Polars' `min`/`max` skip it.
fn lanes_min_max<T: Copy + PartialOrd>(values: &[T], lo0: T, hi0: T) -> (T, T) {
    const LANES: usize = 8;
    let (mut lo, mut hi) = ([lo0; LANES], [hi0; LANES]);
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        crate::prefetch::ahead(values, i * LANES);
        for l in 0..LANES {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    for &v in rest {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let pick = |xs: [T; LANES], better: fn(&T, &T) -> bool| {
        xs.into_iter()
            .reduce(|a, b| if better(&b, &a) { b } else { a })
            .unwrap_or(lo0)
    };
    (pick(lo, T::lt), pick(hi, T::gt))
}

/// Min and max of the non-null values; `None` when there are none.
fn min_max_of<T>(
    ca: &ChunkedArray<T>,
    lo0: T::Native,
    hi0: T::Native,
) -> Option<(T::Native, T::Native)>
where
    T: PolarsNumericType,
{
    if ca.null_count() == ca.len() {
        return None;
    }
    let (mut lo, mut hi) = (lo0, hi0);
    for arr in ca.downcast_iter() {
        let (l, h) = if arr.null_count() == 0 {
            lanes_min_max(arr.values().as_slice(), lo0, hi0)
        } else {
            arr.iter().flatten().fold((lo0, hi0), |(l, h), &v| {
                (if v < l { v } else { l }, if v > h { v } else { h })
            })
        };
        lo = if l < lo { l } else { lo };
        hi = if h > hi { h } else { hi };
    }
    Some((lo, hi))
}

/// Min and max of a float column: `Some(None)` when every value is null, `None` (leave it
/// to Polars) when no value but NaN or an infinity ended a lane where it started, since
/// then the answer may be NaN.
fn min_max_f64(ca: &Float64Chunked) -> Option<Option<(f64, f64)>> {
    match min_max_of(ca, f64::INFINITY, f64::NEG_INFINITY) {
        None => Some(None),
        Some((lo, hi)) if lo == f64::INFINITY || hi == f64::NEG_INFINITY => None,
        Some(found) => Some(Some(found)),
    }
}

/// Min and max of an integer column's non-null values, in one pass; `None` when there are
/// none.
pub(crate) fn min_max_i64(ca: &Int64Chunked) -> Option<(i64, i64)> {
    min_max_of(ca, i64::MAX, i64::MIN)
}

/// The dense tables' budget: `DENSE_PER_ROW` slots per row (at least `DENSE_MIN`, at most
/// `DENSE_MAX`), times two, shared by every accumulator by id (the rows counted and one or
/// two per aggregation), so a range of keys gets dense ids when range × accumulators fits.
/// A sum by key then takes at most 32 bytes a row, about twice its key and value columns.
const DENSE_PER_ROW: usize = 2;
const DENSE_MIN: usize = 1 << 16;
const DENSE_MAX: usize = 1 << 24;

/// The longest string an Arrow view holds inline (polars-arrow's `View::MAX_INLINE_SIZE`).
const INLINE_MAX: u32 = 12;

/// The most distinct short strings the view table takes before leaving the key to Polars.
const VIEWS_MAX: usize = 1 << 16;

/// Ids of inline string views: an open-addressing table (linear probing, at most half
/// full) of the views' 128 bits. Written here rather than a `HashMap` because a row's
/// whole cost is this look-up: one multiply and, for a few categories, one compare, where
/// SwissTable's hashing and control-byte probing cost several times that.
struct ViewTable {
    /// (view bits, id) per line; `EMPTY` marks a free line.
    lines: Vec<(u128, u32)>,
    /// Each id's view bits, id 0 (null) first.
    keys: Vec<u128>,
}

/// No inline view has these bits (its length would be 2³² - 1).
const EMPTY: u128 = u128::MAX;

impl ViewTable {
    fn new() -> Self {
        ViewTable {
            lines: vec![(EMPTY, 0); 64],
            keys: vec![0],
        }
    }

    fn line(&self, bits: u128) -> usize {
        let x = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29);
        let h = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - self.lines.len().trailing_zeros())) as usize
    }

    /// The id of `bits`, a new one when first seen; `None` past `VIEWS_MAX` keys.
    fn id(&mut self, bits: u128) -> Option<u32> {
        let mask = self.lines.len() - 1;
        let mut at = self.line(bits);
        loop {
            let (k, id) = self.lines[at];
            if k == bits {
                return Some(id);
            }
            if k == EMPTY {
                break;
            }
            at = (at + 1) & mask;
        }
        if self.keys.len() > VIEWS_MAX {
            return None;
        }
        let id = self.keys.len() as u32;
        self.keys.push(bits);
        self.lines[at] = (bits, id);
        if self.keys.len() * 2 > self.lines.len() {
            self.grow();
        }
        Some(id)
    }

    fn grow(&mut self) {
        self.lines = vec![(EMPTY, 0); self.lines.len() * 2];
        let mask = self.lines.len() - 1;
        for (id, &bits) in self.keys.iter().enumerate().skip(1) {
            let mut at = self.line(bits);
            while self.lines[at].0 != EMPTY {
                at = (at + 1) & mask;
            }
            self.lines[at] = (bits, id as u32);
        }
    }
}

/// A group id per row of the key column: 0 for null, then `k - min + 1` for dense integers
/// or each distinct short string's id in the order first seen.
enum KeyIds<'a> {
    Dense {
        ca: &'a Int64Chunked,
        lo: i64,
        slots: usize,
    },
    Views {
        ca: &'a StringChunked,
        table: ViewTable,
    },
}

impl<'a> KeyIds<'a> {
    /// `None` for a key type not covered, or integers whose range is too wide for dense ids.
    /// `vectors`: the accumulators by id the aggregations will hold (the rows counted
    /// included), which share the dense table's budget.
    fn new(df: &'a DataFrame, key: &str, vectors: usize) -> Option<Self> {
        let s = df.column(key).ok()?.as_materialized_series();
        match s.dtype() {
            DataType::Int64 => {
                let ca = s.i64().ok()?;
                let (lo, hi) = min_max_i64(ca).unwrap_or((0, -1));
                let range = usize::try_from(hi.checked_sub(lo)?.checked_add(1)?).ok()?;
                let budget = (ca.len() * DENSE_PER_ROW).clamp(DENSE_MIN, DENSE_MAX);
                if range.saturating_mul(vectors) > 2 * budget {
                    return None;
                }
                Some(KeyIds::Dense {
                    ca,
                    lo,
                    slots: range + 1,
                })
            }
            DataType::String => Some(KeyIds::Views {
                ca: s.str().ok()?,
                table: ViewTable::new(),
            }),
            _ => None,
        }
    }

    /// Ids so far (all of them for dense keys).
    fn slots(&self) -> usize {
        match self {
            KeyIds::Dense { slots, .. } => *slots,
            KeyIds::Views { table, .. } => table.keys.len(),
        }
    }

    /// The ids of rows `start..start + len` into `ids`; `None` at a string too long for its
    /// view or past `VIEWS_MAX` distinct ones.
    fn fill(&mut self, start: usize, len: usize, ids: &mut Vec<u32>) -> Option<()> {
        ids.clear();
        match self {
            KeyIds::Dense { ca, lo, .. } => {
                let lo = *lo;
                for arr in ca.slice(start as i64, len).downcast_iter() {
                    if arr.null_count() == 0 {
                        // A line's worth of keys at a time, a line ahead asked for first.
                        let keys = arr.values().as_slice();
                        for (i, line) in keys.chunks(8).enumerate() {
                            crate::prefetch::ahead(keys, i * 8);
                            ids.extend(line.iter().map(|&k| (k - lo) as u32 + 1));
                        }
                    } else {
                        ids.extend(arr.iter().map(|k| k.map_or(0, |&k| (k - lo) as u32 + 1)));
                    }
                }
            }
            KeyIds::Views { ca, table } => {
                let mut id_of = |view: &polars_arrow::array::View| -> Option<u32> {
                    if view.length > INLINE_MAX {
                        return None;
                    }
                    // The bytes past the string are zero in Polars' views; masked all the
                    // same, so two views of one string are one key whatever the padding.
                    table.id(view.as_u128() & inline_mask(view.length))
                };
                for arr in ca.slice(start as i64, len).downcast_iter() {
                    match arr.validity().filter(|v| v.unset_bits() > 0) {
                        None => {
                            for view in arr.views().iter() {
                                ids.push(id_of(view)?);
                            }
                        }
                        Some(valid) => {
                            for (view, ok) in arr.views().iter().zip(valid.iter()) {
                                ids.push(if ok { id_of(view)? } else { 0 });
                            }
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// The key column named `name` of the ids `present`, in that order.
    fn keys(&self, name: PlSmallStr, present: &[u32]) -> Option<Column> {
        match self {
            KeyIds::Dense { lo, .. } if present.first() != Some(&0) => {
                // No null key (id 0 would come first): a column without a validity mask.
                let ks = present.iter().map(|&s| lo + (i64::from(s) - 1));
                Some(Column::new(name, ks.collect::<Vec<i64>>()))
            }
            KeyIds::Dense { lo, .. } => {
                let ks = present
                    .iter()
                    .map(|&s| (s > 0).then(|| lo + (i64::from(s) - 1)));
                Some(Column::new(name, ks.collect::<Vec<Option<i64>>>()))
            }
            KeyIds::Views { table, .. } => {
                let mut strings: Vec<Option<&str>> = Vec::with_capacity(present.len());
                let bytes: Vec<[u8; 16]> = present
                    .iter()
                    .map(|&s| table.keys[s as usize].to_le_bytes())
                    .collect();
                for (&s, b) in present.iter().zip(&bytes) {
                    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    strings.push(
                        (s > 0)
                            .then(|| std::str::from_utf8(&b[4..4 + len]))
                            .transpose()
                            .ok()?,
                    );
                }
                Some(Column::new(name, strings))
            }
        }
    }
}

/// The bits of an inline view of `len` bytes that hold its length and bytes.
fn inline_mask(len: u32) -> u128 {
    let bits = 32 + 8 * len;
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Rows a block of ids covers: its ids stay in the core's cache between the key's pass and
/// each aggregation's, where ids for the whole partition would go to memory and back.
const BLOCK: usize = 16 * 1024;

/// One aggregation's accumulators by group id.
enum Acc<'a> {
    SumF64(&'a Float64Chunked, Vec<f64>),
    /// Polars' integer sums wrap.
    SumI64(&'a Int64Chunked, Vec<std::num::Wrapping<i64>>),
    Mean(Values<'a>, Vec<f64>, Vec<i64>),
    Count(Values<'a>, Vec<i64>),
    /// Rows per group: the rows counted for every group-by.
    Len,
}

impl<'a> Acc<'a> {
    fn new(df: &'a DataFrame, a: &Agg) -> Option<Self> {
        if a.kind == Kind::Len {
            return Some(Acc::Len);
        }
        let v = values(df, &a.column)?;
        Some(match (a.kind, v) {
            (Kind::Sum, Values::F64(c)) => Acc::SumF64(c, Vec::new()),
            (Kind::Sum, Values::I64(c)) => Acc::SumI64(c, Vec::new()),
            (Kind::Mean, v) => Acc::Mean(v, Vec::new(), Vec::new()),
            (Kind::Count, v) => Acc::Count(v, Vec::new()),
            _ => return None,
        })
    }

    /// Adds rows `start..start + ids.len()` of ids `ids` (all below `slots`).
    fn add(&mut self, start: usize, ids: &[u32], slots: usize) {
        let (at, len) = (start as i64, ids.len());
        match self {
            Acc::SumF64(c, acc) => {
                acc.resize(slots, 0.0);
                add_by_id(ids, &c.slice(at, len), acc, None, |x| x);
            }
            Acc::SumI64(c, acc) => {
                acc.resize(slots, std::num::Wrapping(0));
                add_by_id(ids, &c.slice(at, len), acc, None, std::num::Wrapping);
            }
            Acc::Mean(v, acc, n) => {
                acc.resize(slots, 0.0);
                n.resize(slots, 0);
                match v {
                    Values::F64(c) => add_by_id(ids, &c.slice(at, len), acc, Some(n), |x| x),
                    Values::I64(c) => add_by_id(ids, &c.slice(at, len), acc, Some(n), |x| x as f64),
                }
            }
            Acc::Count(v, n) => {
                n.resize(slots, 0);
                match v {
                    Values::F64(c) => count_by_id(ids, &c.slice(at, len), n),
                    Values::I64(c) => count_by_id(ids, &c.slice(at, len), n),
                }
            }
            Acc::Len => {}
        }
    }

    /// The partial columns of aggregation `i` for the ids `present`.
    fn columns(&self, i: usize, present: &[u32], rows: &[u32]) -> Vec<Column> {
        fn gather<A: Copy, B>(acc: &[A], present: &[u32], f: impl Fn(A) -> B) -> Vec<B> {
            present.iter().map(|&s| f(acc[s as usize])).collect()
        }
        match self {
            Acc::SumF64(_, acc) => {
                vec![Column::new(Agg::slot(i, "s"), gather(acc, present, |x| x))]
            }
            Acc::SumI64(_, acc) => vec![Column::new(
                Agg::slot(i, "s"),
                gather(acc, present, |x| x.0),
            )],
            Acc::Mean(_, acc, n) => vec![
                Column::new(Agg::slot(i, "s"), gather(acc, present, |x| x)),
                Column::new(Agg::slot(i, "n"), gather(n, present, |x| x)),
            ],
            Acc::Count(_, n) => vec![Column::new(Agg::slot(i, "n"), gather(n, present, |x| x))],
            Acc::Len => vec![Column::new(
                Agg::slot(i, "n"),
                gather(rows, present, i64::from),
            )],
        }
    }
}

/// Adds `f(value)` of each non-null value into `acc` at its row's id, and counts it in `n`.
fn add_by_id<T, A>(
    ids: &[u32],
    ca: &ChunkedArray<T>,
    acc: &mut [A],
    mut n: Option<&mut Vec<i64>>,
    f: impl Fn(T::Native) -> A,
) where
    T: PolarsNumericType,
    A: Copy + std::ops::AddAssign,
{
    let mut start = 0;
    for arr in ca.downcast_iter() {
        let ids = &ids[start..start + arr.len()];
        start += arr.len();
        match (
            arr.validity().filter(|v| v.unset_bits() > 0),
            n.as_deref_mut(),
        ) {
            (None, None) => {
                let values = arr.values().as_slice();
                for (i, (&g, &v)) in ids.iter().zip(values).enumerate() {
                    crate::prefetch::ahead(values, i);
                    acc[g as usize] += f(v);
                }
            }
            (None, Some(n)) => {
                for (&g, &v) in ids.iter().zip(arr.values().iter()) {
                    acc[g as usize] += f(v);
                    n[g as usize] += 1;
                }
            }
            (Some(valid), mut n) => {
                for ((&g, &v), ok) in ids.iter().zip(arr.values().iter()).zip(valid.iter()) {
                    if ok {
                        acc[g as usize] += f(v);
                        if let Some(n) = n.as_deref_mut() {
                            n[g as usize] += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Counts each non-null value at its row's id.
fn count_by_id<T: PolarsNumericType>(ids: &[u32], ca: &ChunkedArray<T>, n: &mut [i64]) {
    let mut start = 0;
    for arr in ca.downcast_iter() {
        let ids = &ids[start..start + arr.len()];
        start += arr.len();
        match arr.validity() {
            None => ids.iter().for_each(|&g| n[g as usize] += 1),
            Some(valid) => {
                for (&g, ok) in ids.iter().zip(valid.iter()) {
                    n[g as usize] += i64::from(ok);
                }
            }
        }
    }
}

/// `df`'s partials grouped by `key`: a block of rows at a time, its ids, then each
/// aggregation's adds.
fn grouped(df: &DataFrame, key: &PlSmallStr, aggs: &[Agg]) -> Option<DataFrame> {
    let vectors = 1 + aggs
        .iter()
        .map(|a| match a.kind {
            Kind::Mean => 2,
            Kind::Len => 0,
            _ => 1,
        })
        .sum::<usize>();
    // Rows per id as `u32`, half the bytes of `i64` counts: beside the sums, a table of 62k
    // ids (an exchange's slice of 1e6 keys) then leaves more of a core's L2 to the rows.
    if u32::try_from(df.height()).is_err() {
        return None;
    }
    let mut keys = KeyIds::new(df, key, vectors)?;
    let mut accs: Vec<Acc> = aggs
        .iter()
        .map(|a| Acc::new(df, a))
        .collect::<Option<_>>()?;
    let mut rows: Vec<u32> = Vec::new();
    let mut ids = Vec::with_capacity(BLOCK);
    for start in (0..df.height()).step_by(BLOCK) {
        keys.fill(start, BLOCK.min(df.height() - start), &mut ids)?;
        let slots = keys.slots();
        rows.resize(slots, 0);
        for &g in &ids {
            rows[g as usize] += 1;
        }
        for acc in &mut accs {
            acc.add(start, &ids, slots);
        }
    }
    let present: Vec<u32> = (0..rows.len() as u32)
        .filter(|&s| rows[s as usize] > 0)
        .collect();
    let mut out = vec![keys.keys(key.clone(), &present)?];
    for (i, acc) in accs.iter().enumerate() {
        out.extend(acc.columns(i, &present, &rows));
    }
    DataFrame::new(present.len(), out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg;
    use proptest::prelude::*;

    /// Polars' partial of `aggs` by `keys` on `df` (what the kernels must equal).
    fn polars_partial(df: &DataFrame, keys: &[PlSmallStr], aggs: &[Agg]) -> DataFrame {
        let exprs: Vec<Expr> = aggs
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.partial(i))
            .collect();
        let lf = df.clone().lazy();
        if keys.is_empty() {
            lf.select(exprs).collect().unwrap()
        } else {
            let k: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
            lf.group_by(k).agg(exprs).collect().unwrap()
        }
    }

    /// Rows sorted by the key (nulls first), for comparing.
    fn sorted(df: DataFrame, keys: &[PlSmallStr]) -> DataFrame {
        if keys.is_empty() {
            return df;
        }
        df.sort(
            keys.to_vec(),
            SortMultipleOptions::default().with_nulls_last(false),
        )
        .unwrap()
    }

    /// Same columns, types and values (floats within 1e-9 relative).
    fn assert_same(got: &DataFrame, want: &DataFrame) {
        assert_eq!(got.schema(), want.schema(), "{got}\n{want}");
        assert_eq!(got.height(), want.height(), "{got}\n{want}");
        for (g, w) in got.columns().iter().zip(want.columns()) {
            if g.dtype() == &DataType::Float64 {
                let (g, w) = (g.f64().unwrap(), w.f64().unwrap());
                for (x, y) in g.iter().zip(w.iter()) {
                    match (x, y) {
                        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => {
                            assert!(x.is_nan() && y.is_nan(), "{x} against {y}")
                        }
                        (Some(x), Some(y)) => {
                            assert!(
                                x == y || (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                                "{x} against {y}"
                            )
                        }
                        (x, y) => assert_eq!(x, y),
                    }
                }
            } else {
                assert!(g.equals_missing(w), "{g:?}\n{w:?}");
            }
        }
    }

    fn check(df: &DataFrame, keys: &[&str], aggs: &[Agg]) -> bool {
        let keys: Vec<PlSmallStr> = keys.iter().map(|&k| k.into()).collect();
        let Some(got) = partial(df, &keys, aggs) else {
            return false;
        };
        assert_same(
            &sorted(got, &keys),
            &sorted(polars_partial(df, &keys, aggs), &keys),
        );
        true
    }

    fn all_grouped() -> Vec<Agg> {
        vec![
            agg::sum("v"),
            agg::sum("i"),
            agg::mean("v"),
            agg::mean("i"),
            agg::count("v"),
            agg::len(),
        ]
    }

    fn all_whole() -> Vec<Agg> {
        let mut a = all_grouped();
        a.extend([agg::min("v"), agg::max("v"), agg::min("i"), agg::max("i")]);
        a
    }

    /// A frame in `chunks` pieces (vstacked, not rechunked) with an i64 key `k` of `range`
    /// values, a short string key `s`, a float `v` and an integer `i`, nulls every `nulls`
    /// rows (never when 0).
    fn frame(rows: Vec<(i64, u8, f64, i64, bool)>, chunks: usize) -> DataFrame {
        let names = [
            "Books",
            "Clothing",
            "Electronics",
            "Home",
            "Toys",
            "",
            "ΩΩΩΩΩΩ",
        ];
        let mut out: Option<DataFrame> = None;
        let per = rows.len().div_ceil(chunks.max(1)).max(1);
        for piece in rows.chunks(per) {
            let k: Vec<Option<i64>> = piece.iter().map(|r| (!r.4).then_some(r.0)).collect();
            let s: Vec<Option<&str>> = piece
                .iter()
                .map(|r| (!r.4 || r.1 % 2 == 0).then_some(names[r.1 as usize % names.len()]))
                .collect();
            let v: Vec<Option<f64>> = piece
                .iter()
                .map(|r| (r.1 % 5 != 1).then_some(r.2))
                .collect();
            let i: Vec<Option<i64>> = piece
                .iter()
                .map(|r| (r.1 % 7 != 3).then_some(r.3))
                .collect();
            let df = df!("k" => k, "s" => s, "v" => v, "i" => i).unwrap();
            match out.as_mut() {
                Some(acc) => {
                    acc.vstack_mut(&df).unwrap();
                }
                None => out = Some(df),
            }
        }
        out.unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Grouped by dense integers or short strings, and with no key: the kernels give
        /// Polars' partial, nulls in keys and values, over several chunks.
        #[test]
        fn kernels_equal_polars(
            rows in proptest::collection::vec(
                (-50i64..50, any::<u8>(), -1e6f64..1e6, -1_000_000i64..1_000_000, proptest::bool::weighted(0.1)),
                1..300,
            ),
            chunks in 1usize..4,
        ) {
            let df = frame(rows, chunks);
            prop_assert!(check(&df, &["k"], &all_grouped()));
            prop_assert!(check(&df, &["s"], &all_grouped()));
            prop_assert!(check(&df, &[], &all_whole()));
        }
    }

    #[test]
    fn min_and_max_skip_nan_and_leave_all_nan_to_polars() {
        let df =
            df!("v" => [f64::NAN, 3.0, -2.5, f64::NAN, 7.0, 1.0, 0.0, 2.0, 9.5, -1.0]).unwrap();
        assert!(check(&df, &[], &[agg::min("v"), agg::max("v")]));
        let nan = df!("v" => [f64::NAN, f64::NAN]).unwrap();
        let aggs = [agg::min("v")];
        assert!(partial(&nan, &[], &aggs).is_none());
        let inf = df!("v" => [f64::INFINITY, 1.0, f64::NEG_INFINITY]).unwrap();
        assert!(check(&inf, &[], &[agg::min("v"), agg::max("v")]));
        // A largest value of -inf may be NaN's: Polars decides.
        let low = df!("v" => [f64::NEG_INFINITY, f64::NAN]).unwrap();
        assert!(partial(&low, &[], &[agg::max("v")]).is_none());
        let null = df!("v" => [None::<f64>, None]).unwrap();
        assert!(check(
            &null,
            &[],
            &[agg::min("v"), agg::max("v"), agg::sum("v")]
        ));
    }

    #[test]
    fn sparse_integers_long_strings_and_other_types_go_to_polars() {
        let sparse = df!("k" => [0i64, 1 << 40], "v" => [1.0, 2.0]).unwrap();
        assert!(partial(&sparse, &["k".into()], &[agg::sum("v")]).is_none());
        let long =
            df!("k" => ["a string longer than twelve bytes", "b"], "v" => [1.0, 2.0]).unwrap();
        assert!(partial(&long, &["k".into()], &[agg::sum("v")]).is_none());
        let int32 = df!("k" => [1i32, 2], "v" => [1.0, 2.0]).unwrap();
        assert!(partial(&int32, &["k".into()], &[agg::sum("v")]).is_none());
        let f32s = df!("k" => [1i64, 2], "v" => [1.0f32, 2.0]).unwrap();
        assert!(partial(&f32s, &["k".into()], &[agg::sum("v")]).is_none());
        // Min and max by key, quantiles and two keys are Polars' own.
        let df = df!("k" => [1i64, 2], "v" => [1.0, 2.0]).unwrap();
        assert!(partial(&df, &["k".into()], &[agg::min("v")]).is_none());
        assert!(partial(&df, &[], &[agg::median("v")]).is_none());
        assert!(partial(&df, &["k".into(), "v".into()], &[agg::len()]).is_none());
    }

    /// More rows than a block, in chunks that do not line up with the blocks, nulls in keys
    /// and values: the blocks' slices of keys and values stay row for row.
    #[test]
    fn blocks_across_chunks_equal_polars() {
        let rows: Vec<(i64, u8, f64, i64, bool)> = (0..(BLOCK as i64 * 2 + 777))
            .map(|r| {
                let x = r.wrapping_mul(2_654_435_761) % 1_000_003;
                (
                    x % 5_000,
                    (x % 251) as u8,
                    x as f64 * 0.25,
                    x - 500_000,
                    x % 13 == 0,
                )
            })
            .collect();
        for chunks in [1, 3, 7] {
            let df = frame(rows.clone(), chunks);
            assert!(check(&df, &["k"], &all_grouped()));
            assert!(check(&df, &["s"], &all_grouped()));
            assert!(check(&df, &[], &all_whole()));
        }
    }

    /// Keys at the ends of `i64`, and a range too wide for the accumulators asked: the one
    /// covered gives Polars' partial, the other is Polars'.
    #[test]
    fn extreme_keys_and_the_table_budget() {
        let top = df!("k" => [i64::MAX, i64::MAX - 3, i64::MAX], "v" => [1.0, 2.0, 4.0]).unwrap();
        assert!(check(&top, &["k"], &[agg::sum("v"), agg::len()]));
        let bottom = df!("k" => [i64::MIN, i64::MIN + 1], "v" => [1.0, 2.0]).unwrap();
        assert!(check(&bottom, &["k"], &[agg::mean("v")]));
        // 100 rows, keys 0 and 40,000: a range within 2 × 65,536 slots for a sum and the
        // rows (2 accumulators), not for a sum, a mean and a count (5).
        let k: Vec<i64> = (0..100)
            .map(|i| if i % 2 == 0 { 0 } else { 40_000 })
            .collect();
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        let wide = df!("k" => k, "v" => v).unwrap();
        assert!(check(&wide, &["k"], &[agg::sum("v")]));
        let many = [agg::sum("v"), agg::mean("v"), agg::count("v")];
        assert!(partial(&wide, &["k".into()], &many).is_none());
    }

    #[test]
    fn wide_dense_ranges_and_many_strings_are_covered() {
        // Keys over a range four times the rows (under `DENSE_MIN`), and 3,000 distinct
        // short strings.
        let k: Vec<i64> = (0..3000).map(|i| (i * 4) % 12_000 - 6_000).collect();
        let s: Vec<String> = (0..3000).map(|i| format!("s{}", i * 7919 % 3001)).collect();
        let v: Vec<f64> = (0..3000).map(|i| i as f64 * 0.5).collect();
        let df = df!("k" => k, "s" => s, "v" => v.clone(), "i" => v.iter().map(|&x| x as i64).collect::<Vec<_>>()).unwrap();
        assert!(check(&df, &["k"], &all_grouped()));
        assert!(check(&df, &["s"], &all_grouped()));
    }
}
