//! A group-by's exchange cut by ranges of one integer key instead of by its hash. Each
//! output then holds one slice of the key range, so the dense table its partial step builds
//! (`kernel`: one slot per key between the output's smallest and largest) is a slice too and
//! stays in cache, where a hash cut gives every output keys from the whole range.
//!
//! The ranges are quantiles of a sample of partition 0's keys, so a skewed key still fills
//! the outputs about evenly. A key outside partition 0's range goes by hash: a frame sorted
//! by its key (each partition a range of its own) is then cut as a hash exchange would cut
//! it, not all into the last output. Every map uses the same `KeyRanges`, so equal keys meet
//! in one output whichever partition they come from.

use std::borrow::Cow;

use lovage_core::TaskError;
use polars::prelude::*;
use polars_arrow::array::Array;

use crate::shuffle::{split_counted, Piece};

#[cfg(test)]
thread_local! {
    /// Partitions this thread cut by key ranges (tests count them).
    pub(crate) static RANGE_SPLITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Keys sampled from partition 0 to choose the ranges.
const SAMPLE: usize = 1 << 14;

/// The outputs of one integer key: output `j` holds the keys in
/// `bounds[j - 1]..bounds[j]` (from `lo`, to `hi` inclusive at the ends), nulls go to output 0
/// and keys outside `lo..=hi` by hash.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRanges {
    lo: i64,
    hi: i64,
    /// Ascending, one fewer than the outputs.
    bounds: Vec<i64>,
    /// The output of each run of `1 << shift` keys from `lo`, or `MIXED` for a run that
    /// holds a bound: most keys find their output in one look-up, not a binary search.
    runs: Vec<u16>,
    shift: u32,
}

thread_local! {
    /// Each row's output, reused from one cut to the next on a thread: a fresh vector per
    /// partition is a fresh page fault every 1,024 rows (~2 µs each on this project's VM).
    static OUTPUTS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same, for a cut into at most 256 pieces.
    static SMALL_OUTPUTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows' outputs `OUTPUTS` and `SMALL_OUTPUTS` keep between cuts at most (4 MiB and 1 MiB).
const KEEP_OUTPUTS: usize = 1 << 20;

/// Runs of keys `KeyRanges` looks up at most.
const RUNS: u64 = 1 << 12;

/// A run of keys that spans outputs.
const MIXED: u16 = u16::MAX;

/// The output of a key outside the ranges, of `n`: Fibonacci hashing (the high bits of the
/// product are well mixed).
fn hashed(k: i64, n: usize) -> u32 {
    (((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % n as u64) as u32
}

/// The one key column of `df` as `Int64`, when `keys` is one integer column that fits.
fn int_key<'a>(df: &'a DataFrame, keys: &[PlSmallStr]) -> Option<Cow<'a, Int64Chunked>> {
    let [key] = keys else { return None };
    let s = df.column(key).ok()?.as_materialized_series();
    match s.dtype() {
        DataType::Int64 => s.i64().ok().map(Cow::Borrowed),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let cast = s.cast(&DataType::Int64).ok()?;
            cast.i64().ok().map(|ca| Cow::Owned(ca.clone()))
        }
        _ => None,
    }
}

impl KeyRanges {
    /// Ranges for `n` outputs from the keys of `df` (partition 0); `None` for fewer than two
    /// outputs, a key that is not one integer column, or no key that is not null.
    pub(crate) fn sample(df: &DataFrame, keys: &[PlSmallStr], n: usize) -> Option<Self> {
        if n < 2 {
            return None;
        }
        let ca = int_key(df, keys)?;
        // One pass for both ends, while partition 0's map runs alone (the others wait).
        let (lo, hi) = crate::kernel::min_max_i64(&ca)?;
        let step = (ca.len() / SAMPLE).max(1);
        let mut sample: Vec<i64> = match ca.cont_slice() {
            Ok(keys) => keys.iter().step_by(step).copied().collect(),
            Err(_) => ca.iter().step_by(step).flatten().collect(),
        };
        if sample.is_empty() {
            // Every sampled row was null: the ends are all there is to go on.
            sample = vec![lo, hi];
        }
        sample.sort_unstable();
        let bounds: Vec<i64> = (1..n).map(|j| sample[j * sample.len() / n]).collect();
        let span = hi.abs_diff(lo);
        let shift = (0..64).find(|s| span >> s < RUNS).unwrap_or(63);
        let runs = (0..=span >> shift)
            .map(|r| {
                let first = lo.wrapping_add((r << shift) as i64);
                let last = first
                    .checked_add(((1u64 << shift) - 1) as i64)
                    .map_or(hi, |last| last.min(hi));
                let (a, b) = (
                    bounds.partition_point(|&b| b <= first),
                    bounds.partition_point(|&b| b <= last),
                );
                if a == b && a < MIXED as usize {
                    a as u16
                } else {
                    MIXED
                }
            })
            .collect();
        Some(KeyRanges {
            lo,
            hi,
            bounds,
            runs,
            shift,
        })
    }

    /// The output of key `k`.
    fn output(&self, k: Option<i64>, n: usize) -> u32 {
        match k {
            None => 0,
            Some(k) if (self.lo..=self.hi).contains(&k) => {
                match self.runs[(k.abs_diff(self.lo) >> self.shift) as usize] {
                    MIXED => self.output_in_mixed_run(k),
                    out => u32::from(out),
                }
            }
            Some(k) => hashed(k, n),
        }
    }

    /// The output of a key in a run that holds a bound (a binary search of the bounds), for
    /// `output` and out of `outputs_of`'s loop so the loop keeps its values in registers: few
    /// runs hold one.
    #[cold]
    #[inline(never)]
    fn output_in_mixed_run(&self, k: i64) -> u32 {
        self.bounds.partition_point(|&b| b <= k) as u32
    }

    /// The output of each key of `keys` (none null) into `out`, each counted in `counts`:
    /// `output` written as one tight loop without the null case, as it runs once per row of
    /// every partition. A function of its own (not inlined into `cut`), so its few values
    /// stay in registers; inlined, they were spilled to the stack, though the loop, which
    /// waits on memory, took the same time.
    #[inline(never)]
    fn outputs_of<P: Piece>(&self, keys: &[i64], out: &mut [P], counts: &mut [usize]) {
        let (lo, span, shift) = (self.lo as u64, self.hi.abs_diff(self.lo), self.shift);
        let runs = self.runs.as_slice();
        let n = counts.len();
        for (i, (o, &k)) in out.iter_mut().zip(keys).enumerate() {
            crate::prefetch::ahead(keys, i);
            // `k - lo` modulo 2^64: at most `span` exactly when `k` is in `lo..=hi`, so one
            // comparison tells a key in range (and its run is then in `runs`).
            let d = (k as u64).wrapping_sub(lo);
            let p = if d > span {
                // Inline, not cold: in a frame sorted by its key, most rows of the partitions
                // after 0 fall outside its range.
                hashed(k, n)
            } else {
                match runs.get((d >> shift) as usize) {
                    Some(&run) if run != MIXED => u32::from(run),
                    _ => self.output_in_mixed_run(k),
                }
            };
            // Below `n`, which `P` holds (`split` picks `u8` only for at most 256 pieces).
            debug_assert!((p as usize) < n, "piece {p} of {n}");
            let piece = P::wrap(p);
            *o = piece;
            counts[piece.index()] += 1;
        }
    }

    /// Cuts `df` into `bounds.len() + 1` pieces by its key (rows keep their order within a
    /// piece); an error when `df`'s key is not the integer column the ranges were made from.
    pub(crate) fn split(
        &self,
        df: &DataFrame,
        keys: &[PlSmallStr],
    ) -> Result<Vec<DataFrame>, TaskError> {
        #[cfg(test)]
        RANGE_SPLITS.with(|c| c.set(c.get() + 1));
        let n = self.bounds.len() + 1;
        let ca = int_key(df, keys).ok_or_else(|| {
            crate::data_error(format!(
                "internal: a range cut by {keys:?} of a frame whose key is not one integer column"
            ))
        })?;
        if n <= 256 {
            SMALL_OUTPUTS.with_borrow_mut(|outputs| self.cut(df, &ca, n, outputs))
        } else {
            OUTPUTS.with_borrow_mut(|outputs| self.cut(df, &ca, n, outputs))
        }
    }

    /// `split`'s cut of `df` (key `ca`) into `n` pieces, each row's piece written in `outputs`.
    fn cut<P: Piece>(
        &self,
        df: &DataFrame,
        ca: &Int64Chunked,
        n: usize,
        outputs: &mut Vec<P>,
    ) -> Result<Vec<DataFrame>, TaskError> {
        let zero = P::try_from(0).map_err(|_| crate::data_error("internal: no piece 0"))?;
        outputs.clear();
        outputs.resize(df.height(), zero);
        let mut counts = vec![0usize; n];
        let mut row = 0;
        for arr in ca.downcast_iter() {
            let out = &mut outputs[row..row + arr.len()];
            row += arr.len();
            if arr.null_count() == 0 {
                self.outputs_of(arr.values(), out, &mut counts);
            } else {
                for (o, k) in out.iter_mut().zip(arr.iter()) {
                    let p = self.output(k.copied(), n);
                    *o = P::try_from(p).map_err(|_| {
                        crate::data_error(format!("internal: piece {p} of {n} in a range cut"))
                    })?;
                    counts[o.index()] += 1;
                }
            }
        }
        let pieces = split_counted(df, &counts, outputs);
        // A partition's worth is kept for the next cut on this thread (its pages already
        // faulted in); more would hold memory a one-off large partition asked for.
        outputs.clear();
        outputs.shrink_to(KEEP_OUTPUTS);
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<PlSmallStr> {
        vec!["k".into()]
    }

    /// The keys of each piece, as `Option<i64>`.
    fn pieces_keys(pieces: &[DataFrame]) -> Vec<Vec<Option<i64>>> {
        pieces
            .iter()
            .map(|p| {
                let s = p.column("k").unwrap().cast(&DataType::Int64).unwrap();
                s.i64().unwrap().iter().collect()
            })
            .collect()
    }

    #[test]
    fn every_row_goes_to_one_output_and_in_range_outputs_are_slices_of_the_range() {
        let k: Vec<i64> = (0..10_000).map(|i| (i * 7919) % 1000).collect();
        let v: Vec<i64> = (0..10_000).collect();
        let df = df!("k" => k, "v" => v).unwrap();
        let r = KeyRanges::sample(&df, &keys(), 4).unwrap();
        let pieces = r.split(&df, &keys()).unwrap();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.iter().map(|p| p.height()).sum::<usize>(), 10_000);
        let ks = pieces_keys(&pieces);
        // Each output's keys lie between its neighbours': contiguous slices of 0..1000.
        for w in ks.windows(2) {
            let max = w[0].iter().flatten().max().unwrap();
            let min = w[1].iter().flatten().min().unwrap();
            assert!(max < min, "outputs overlap: {max} ≥ {min}");
        }
        // Uniform keys: quantiles cut them about evenly.
        for p in &pieces {
            assert!((2000..3000).contains(&p.height()), "{}", p.height());
        }
        // Rows keep their order within a piece: `v` ascends.
        for p in &pieces {
            let v: Vec<i64> = p
                .column("v")
                .unwrap()
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect();
            assert!(v.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_cut_into_more_than_256_pieces_matches_each_keys_output() {
        // Past 256 pieces a row's piece is a `u32`, below it a byte: both cuts put each row,
        // null or outside partition 0's range (0..3000, which goes by hash) included, where
        // `output` says.
        let k: Vec<Option<i64>> = (0..20_000i64)
            .map(|i| match i % 97 {
                0 => None,
                1 => Some(5_000 + i),
                2 => Some(-7 - i),
                _ => Some((i * 7919) % 3000),
            })
            .collect();
        let df = df!("k" => k.clone()).unwrap();
        let partition_0 = df!("k" => (0..3000i64).collect::<Vec<_>>()).unwrap();
        for n in [3, 256, 257, 300] {
            let r = KeyRanges::sample(&partition_0, &keys(), n).unwrap();
            assert!(k.iter().flatten().any(|&k| !(r.lo..=r.hi).contains(&k)));
            let got = pieces_keys(&r.split(&df, &keys()).unwrap());
            let mut want = vec![Vec::new(); n];
            for &key in &k {
                want[r.output(key, n) as usize].push(key);
            }
            assert_eq!(got, want, "{n} pieces");
        }
    }

    #[test]
    fn equal_keys_from_other_partitions_meet_nulls_go_to_0_and_outside_keys_spread() {
        let first = df!("k" => (0i64..1000).collect::<Vec<_>>()).unwrap();
        let r = KeyRanges::sample(&first, &keys(), 8).unwrap();
        // A later partition: some keys of partition 0's range, nulls, and a sorted run far
        // beyond it (a frame sorted by its key).
        let mut later: Vec<Option<i64>> = (0..1000).rev().map(Some).collect();
        later.extend([None, None]);
        later.extend((1_000_000..1_008_000).map(Some));
        let later = df!("k" => later).unwrap();
        let a = pieces_keys(&r.split(&first, &keys()).unwrap());
        let b = pieces_keys(&r.split(&later, &keys()).unwrap());
        for (j, (a, b)) in a.iter().zip(&b).enumerate() {
            for k in b.iter().flatten().filter(|k| **k < 1000) {
                assert!(
                    a.contains(&Some(*k)),
                    "key {k} went to {j} only in the later one"
                );
            }
        }
        assert_eq!(b[0].iter().filter(|k| k.is_none()).count(), 2);
        // The run beyond the range is spread by hash, not piled into one output.
        for piece in &b {
            let beyond = piece.iter().flatten().filter(|k| **k >= 1_000_000).count();
            assert!(
                (500..1500).contains(&beyond),
                "{beyond} of 8000 keys beyond the range"
            );
        }
    }

    #[test]
    fn a_skewed_key_and_small_integer_types() {
        // Half the rows one key: it lands in one output, the rest share the others.
        let k: Vec<i32> = (0..4000).map(|i| if i % 2 == 0 { 7 } else { i }).collect();
        let df = df!("k" => k).unwrap();
        let r = KeyRanges::sample(&df, &keys(), 4).unwrap();
        let ks = pieces_keys(&r.split(&df, &keys()).unwrap());
        let with_7: Vec<usize> = (0..4).filter(|&j| ks[j].contains(&Some(7))).collect();
        assert_eq!(with_7.len(), 1);
        assert_eq!(ks.iter().map(Vec::len).sum::<usize>(), 4000);
    }

    #[test]
    fn the_ends_of_i64() {
        let df = df!("k" => [i64::MIN, -1, 0, 1, i64::MAX, i64::MIN, i64::MAX]).unwrap();
        let r = KeyRanges::sample(&df, &keys(), 3).unwrap();
        assert!(r.runs.len() <= RUNS as usize);
        let ks = pieces_keys(&r.split(&df, &keys()).unwrap());
        assert_eq!(ks.iter().map(Vec::len).sum::<usize>(), 7);
        for w in ks.windows(2) {
            if let (Some(max), Some(min)) =
                (w[0].iter().flatten().max(), w[1].iter().flatten().min())
            {
                assert!(max < min, "outputs overlap: {max} ≥ {min}");
            }
        }
    }

    #[test]
    fn not_one_integer_key_or_one_output_has_no_ranges() {
        let df = df!("k" => ["a", "b"], "x" => [1i64, 2]).unwrap();
        assert_eq!(KeyRanges::sample(&df, &keys(), 4), None);
        let two: Vec<PlSmallStr> = vec!["x".into(), "x".into()];
        assert_eq!(KeyRanges::sample(&df, &two, 4), None);
        let ints = df!("k" => [1i64, 2]).unwrap();
        assert_eq!(KeyRanges::sample(&ints, &keys(), 1), None);
        let nulls = df!("k" => [None::<i64>, None]).unwrap();
        assert_eq!(KeyRanges::sample(&nulls, &keys(), 4), None);
        // A frame whose key is not the integer column the ranges came from: a clear error.
        let r = KeyRanges::sample(&ints, &keys(), 2).unwrap();
        let err = r.split(&df, &keys()).unwrap_err().to_string();
        assert!(err.contains("not one integer column"), "{err}");
    }
}
