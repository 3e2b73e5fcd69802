//! The in-process exchange's buffers, kept a short while for the next exchange.
//!
//! A group-by by many keys cuts every partition into pieces (`shuffle::split_counted`): a
//! second copy of the key and value columns, ~160 MB for 1e7 rows. Memory fresh from the
//! kernel is zeroed and faulted in on first write, and on this project's VM that costs as
//! much as the cut itself (a run after `malloc_trim`: 0.087 s against 0.058 s with the
//! memory still mapped); glibc hands large blocks back to the kernel as soon as they are
//! freed. So a piece's values live in a buffer this module owns (Polars' `Buffer` backed by
//! a foreign owner): when Polars drops the last piece of it, the vector goes back on a shelf
//! and the next exchange writes into memory already mapped, as an allocator such as
//! mimalloc or jemalloc (Polars' Python wheels ship one) would keep it.
//!
//! Kept at most `MAX_KEPT` bytes and `KEEP` long: a thread started with the first buffer
//! shelved frees what has waited longer, and ends when the shelves are empty.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use polars::prelude::*;
use polars_arrow::array::PrimitiveArray;
use polars_buffer::Buffer;

/// How long a shelved buffer waits for the next exchange before it is freed.
const KEEP: Duration = Duration::from_secs(2);

/// Bytes shelved at most, all types together; a buffer past it is freed at once.
const MAX_KEPT: usize = 512 << 20;

/// Bytes on the shelves now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Whether the thread freeing old buffers runs.
static SWEEPING: AtomicBool = AtomicBool::new(false);

/// Buffers of one value type waiting for reuse, with when each was shelved.
pub(crate) struct Shelf<T> {
    kept: Mutex<Vec<(Instant, Vec<T>)>>,
}

impl<T> Shelf<T> {
    const fn new() -> Self {
        Shelf {
            kept: Mutex::new(Vec::new()),
        }
    }

    fn bytes(v: &Vec<T>) -> usize {
        v.capacity() * std::mem::size_of::<T>()
    }

    /// Frees the buffers shelved before `before`; the bytes left on this shelf.
    fn sweep(&self, before: Instant) -> usize {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(at, v)| {
            let keep = *at >= before;
            if !keep {
                KEPT.fetch_sub(Self::bytes(v), Ordering::Relaxed);
            }
            keep
        });
        kept.iter().map(|(_, v)| Self::bytes(v)).sum()
    }
}

/// A value type whose buffers are shelved.
pub(crate) trait Reusable: Copy + Send + Sync + 'static {
    fn shelf() -> &'static Shelf<Self>;
}

macro_rules! reusable {
    ($($t:ty),*) => {
        $(impl Reusable for $t {
            fn shelf() -> &'static Shelf<$t> {
                static SHELF: Shelf<$t> = Shelf::new();
                &SHELF
            }
        })*

        /// Frees every buffer shelved before `before`; the bytes left on all shelves.
        fn sweep_all(before: Instant) -> usize {
            0 $(+ <$t as Reusable>::shelf().sweep(before))*
        }
    };
}

reusable!(i32, i64, u32, u64, f32, f64);

/// An empty vector with room for `len` values: a shelved one when one fits (at most twice
/// the room asked for, so a small request does not take a large buffer), else a new one
/// (asking for huge pages, `crate::pages`).
pub(crate) fn take<T: Reusable>(len: usize) -> Vec<T> {
    let found = {
        let mut kept = T::shelf().kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .position(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
            .map(|i| kept.swap_remove(i).1)
    };
    match found {
        Some(v) => {
            KEPT.fetch_sub(Shelf::bytes(&v), Ordering::Relaxed);
            v
        }
        None => {
            let mut v = Vec::with_capacity(len);
            crate::pages::huge_pages(&mut v);
            v
        }
    }
}

/// Puts `v` on its shelf (emptied), or frees it when the shelves are full.
fn give<T: Reusable>(mut v: Vec<T>) {
    let bytes = Shelf::bytes(&v);
    if bytes == 0 || KEPT.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_KEPT {
        if bytes > 0 {
            KEPT.fetch_sub(bytes, Ordering::Relaxed);
        }
        return;
    }
    v.clear();
    T::shelf()
        .kept
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((Instant::now(), v));
    if !SWEEPING.swap(true, Ordering::AcqRel) {
        let started = std::thread::Builder::new()
            .name("lovage-frame-buffers".into())
            .spawn(|| loop {
                std::thread::sleep(KEEP / 2);
                if sweep_all(Instant::now() - KEEP) == 0 {
                    SWEEPING.store(false, Ordering::Release);
                    // A buffer shelved between the sweep and the store started no thread
                    // (the flag was still up): this one carries on for it, unless a new
                    // shelving has started another meanwhile.
                    if KEPT.load(Ordering::Acquire) == 0 || SWEEPING.swap(true, Ordering::AcqRel) {
                        break;
                    }
                }
            });
        if started.is_err() {
            // No thread to free it later: free it now.
            SWEEPING.store(false, Ordering::Release);
            sweep_all(Instant::now());
        }
    }
}

/// The owner of a piece's values: gives its vector back to the shelf when Polars drops the
/// last slice of it.
struct Shelved<T: Reusable>(Vec<T>);

impl<T: Reusable> AsRef<[T]> for Shelved<T> {
    fn as_ref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Reusable> Drop for Shelved<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// A column of `values` (no nulls) whose buffer goes back to the shelf when dropped.
pub(crate) fn chunked<T>(name: PlSmallStr, values: Vec<T::Native>) -> ChunkedArray<T>
where
    T: PolarsNumericType,
    T::Native: Reusable,
{
    let array = PrimitiveArray::new(
        T::get_static_dtype().to_arrow(CompatLevel::newest()),
        Buffer::from_owner(Shelved(values)),
        None,
    );
    ChunkedArray::with_chunk(name, array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_column_s_buffer_is_reused_and_values_survive_polars() {
        // A length no other test asks for, so the shelf's buffer is this test's.
        let len = 1_234_567;
        let mut v: Vec<i64> = take(len);
        v.extend((0..len as i64).map(|i| i * 3));
        let at = v.as_ptr();
        let ca = chunked::<Int64Type>("x".into(), v);
        let s = ca.slice(10, 5).into_series();
        assert_eq!(
            s.i64().unwrap().iter().collect::<Vec<_>>(),
            (10..15).map(|i| Some(i * 3)).collect::<Vec<_>>()
        );
        assert_eq!(ca.sum(), Some((0..len as i64).map(|i| i * 3).sum()));
        drop(ca);
        // A slice still holds the buffer: not on the shelf yet.
        let other: Vec<i64> = take(len);
        assert_ne!(other.as_ptr(), at);
        drop(s);
        let again: Vec<i64> = take(len);
        assert_eq!(again.as_ptr(), at, "the buffer back from Polars is reused");
        assert!(again.is_empty() && again.capacity() >= len);
    }

    #[test]
    fn old_buffers_are_swept_and_small_requests_do_not_take_large_buffers() {
        let len = 2_345_678;
        give::<u32>(Vec::with_capacity(len));
        let small: Vec<u32> = take(len / 4);
        assert!(
            small.capacity() < len,
            "a small request took a large buffer"
        );
        u32::shelf().sweep(Instant::now() + Duration::from_secs(1));
        // Other tests may shelve small `u32` buffers meanwhile; none this large.
        let kept = u32::shelf().kept.lock().unwrap();
        assert!(kept.iter().all(|(_, v)| v.capacity() < len), "not swept");
    }
}
