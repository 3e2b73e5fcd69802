//! Software prefetch for the loops that stream through memory: a column read once in
//! order, and the pieces of the exchange's scatter written once in order.
//!
//! On this project's VM such a loop stalls on each new cache line, as if the core's own
//! prefetcher did not run ahead: in the exchange's range cut half the samples sat on the
//! load of the key. Asking for the lines a little ahead of the loop halved the cut's CPU
//! time (26 → 13 ms per group-by of 1e7 rows) and took ~20% off both group-by workloads of
//! `lovage bench frames` (docs/benchmarks.md, "software prefetch").

/// How far ahead of the value being read `ahead` asks for its line, in bytes.
const AHEAD_BYTES: usize = 1024;

/// Asks the core to load the cache line of `values[i + AHEAD_BYTES / size]`, for a loop at
/// `values[i]` that goes on in order.
#[inline(always)]
pub(crate) fn ahead<T>(values: &[T], i: usize) {
    at(
        values,
        i.saturating_add(AHEAD_BYTES / std::mem::size_of::<T>().max(1)),
    );
}

/// Asks the core to load the cache line of `values[i]`: nothing past the end of `values` or
/// off x86_64. A hint only, so a wrong guess costs a little time, never a wrong value.
#[inline(always)]
pub(crate) fn at<T>(values: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = values.get(i) {
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 core has; it neither reads
        // memory into the program nor faults, and `v` is in bounds besides.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (v as *const T).cast(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, i);
}
