//! Loads and stores of plain-old-data in shared memory: one atomic instruction when the type
//! has the size of an atomic, so a reader never sees half a write.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use bytemuck::Pod;

/// True when `T` is loaded and stored atomically (1, 2, 4 or 8 bytes, aligned to its size).
pub(crate) fn is_atomic<T: Pod>() -> bool {
    let size = std::mem::size_of::<T>();
    matches!(size, 1 | 2 | 4 | 8)
}

/// Reads `*p`, atomically when `is_atomic::<T>()`.
///
/// # Safety
/// `p` is valid for reads of `T` and aligned to `size_of::<T>()` when that is 1, 2, 4 or 8 (the
/// shared objects place elements at 64-byte aligned offsets, so they are).
pub(crate) unsafe fn load<T: Pod>(p: *const T) -> T {
    // SAFETY: (all arms) the caller's contract; the atomic types have the size and alignment
    // of the integer they wrap, and `T: Pod` takes any bit pattern.
    unsafe {
        match std::mem::size_of::<T>() {
            1 => bytemuck::pod_read_unaligned(&[(*p.cast::<AtomicU8>()).load(Ordering::Acquire)]),
            2 => bytemuck::pod_read_unaligned(
                &(*p.cast::<AtomicU16>())
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            4 => bytemuck::pod_read_unaligned(
                &(*p.cast::<AtomicU32>())
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            8 => bytemuck::pod_read_unaligned(
                &(*p.cast::<AtomicU64>())
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            _ => std::ptr::read_volatile(p),
        }
    }
}

/// Writes `*p = v`, atomically when `is_atomic::<T>()`.
///
/// # Safety
/// As for [`load`], for writes.
pub(crate) unsafe fn store<T: Pod>(p: *mut T, v: T) {
    let bytes = bytemuck::bytes_of(&v);
    // SAFETY: as in `load`.
    unsafe {
        match bytes.len() {
            1 => (*p.cast::<AtomicU8>()).store(bytes[0], Ordering::Release),
            2 => (*p.cast::<AtomicU16>())
                .store(u16::from_ne_bytes([bytes[0], bytes[1]]), Ordering::Release),
            4 => (*p.cast::<AtomicU32>()).store(
                bytemuck::pod_read_unaligned::<u32>(bytes),
                Ordering::Release,
            ),
            8 => (*p.cast::<AtomicU64>()).store(
                bytemuck::pod_read_unaligned::<u64>(bytes),
                Ordering::Release,
            ),
            _ => std::ptr::write_volatile(p, v),
        }
    }
}

/// Integers with atomic read-modify-write in shared memory (`Value` and `Array` offer
/// `fetch_add` and friends for these).
pub trait AtomicInt: Pod + sealed::Sealed {
    #[doc(hidden)]
    fn fetch_add_at(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_sub_at(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn compare_exchange_at(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicInt for $t {
            fn fetch_add_at(p: *mut Self, v: Self) -> Self {
                // SAFETY: callers pass an aligned element of a live shared object.
                unsafe { (*p.cast::<$a>()).fetch_add(v, Ordering::AcqRel) }
            }
            fn fetch_sub_at(p: *mut Self, v: Self) -> Self {
                // SAFETY: as above.
                unsafe { (*p.cast::<$a>()).fetch_sub(v, Ordering::AcqRel) }
            }
            fn compare_exchange_at(p: *mut Self, current: Self, new: Self) -> Result<Self, Self> {
                // SAFETY: as above.
                unsafe {
                    (*p.cast::<$a>()).compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                }
            }
        }
    )*};
}

use std::sync::atomic::{AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicIsize, AtomicUsize};
atomic_int!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize);
