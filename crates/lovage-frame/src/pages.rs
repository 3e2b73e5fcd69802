//! Transparent huge pages for the large buffers a shuffle writes once and reads once.
//!
//! The first write to each fresh 4 KiB page is a page fault, and on this project's VM one
//! costs ~2 µs: an in-process group-by of 1e7 rows by 1e6 keys writes ~160 MB of pieces, so
//! ~40k faults, ~80 ms of CPU, about what the rest of the exchange costs. Linux maps 2 MiB
//! pages instead where a region asks for them (`MADV_HUGEPAGE`; the machine's
//! `transparent_hugepage/enabled` is `madvise`), one fault per 512 small ones. The allocator
//! keeps owning the memory: the advice changes how its pages are backed, never what it holds.

/// Buffers smaller than this are left to small pages: their 2 MiB-aligned interior would be
/// too small a share of them.
const MIN_BYTES: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned interior of `v`'s spare capacity with huge
/// pages, before anything is written there. Nothing happens on other systems, for small
/// buffers, or when the kernel says no (the pages are then small, as without it).
pub(crate) fn huge_pages<T>(v: &mut Vec<T>) {
    let bytes = v.capacity().saturating_sub(v.len()) * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.spare_capacity_mut().as_mut_ptr() as usize;
        let (from, to) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if to > from {
            // SAFETY: `from..to` lies inside `v`'s allocation, which lives across the call;
            // `MADV_HUGEPAGE` changes neither the mapping nor the memory's contents, only
            // the size of the pages the kernel backs it with from now on. Its failure
            // (a kernel without THP) leaves small pages, so its result is not needed.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_buffers_hold_what_is_written() {
        for cap in [0usize, 1000, 1 << 20, 3 << 20] {
            let mut v: Vec<u64> = Vec::with_capacity(cap);
            huge_pages(&mut v);
            v.extend(0..cap as u64);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        }
    }
}
