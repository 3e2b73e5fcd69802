//! The seeds' crawler on a synthetic site (no network): page `p` of a site of `size` pages
//! links to 8 pages picked by a hash of `p` — half near it (cycles, duplicates), half anywhere.
//! Work is found at run time: every page fetched spawns the pages it links to, each once.
//!
//! [`crawl()`] is a registered task (`lovage.crawl`) that spawns its links itself through
//! [`crate::ctx`], keyed by page number, so the scope that contains it (`app.scope`) counts
//! every reachable page once, whoever finds it first and however often a worker dies.
//! [`on_threads`] is the same crawl in a [`ThreadPool`] scope; [`reachable`] the serial answer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::ThreadPool;

/// The links on page `page` of a site of `size` pages.
pub fn links_of(page: u64, size: u64) -> [u64; 8] {
    let mut h = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    std::array::from_fn(|_| {
        h ^= h >> 31;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 29;
        if h & 1 == 0 {
            (page + (h >> 8) % 16) % size
        } else {
            (h >> 8) % size
        }
    })
}

/// How many pages are reachable from page 0, found serially: what every crawl must match.
pub fn reachable(size: u64) -> usize {
    let mut seen = HashSet::from([0u64]);
    let mut todo = vec![0u64];
    while let Some(p) = todo.pop() {
        for l in links_of(p, size) {
            if seen.insert(l) {
                todo.push(l);
            }
        }
    }
    seen.len()
}

/// The key a page is spawned under: one task per page in a scope.
pub fn page_key(page: u64) -> String {
    format!("page-{page}")
}

/// Fetches page `page` and spawns each page it links to (keyed, so each page runs once in
/// the scope). Runs in a `lovage worker`'s task (it spawns through [`crate::ctx`]) or in a
/// [`ProcessPool::scope`](crate::ProcessPool::scope) (through
/// [`lovage_pool::process::scope::spawn_keyed`]); returns how many links it found.
#[crate::task(name = "lovage.crawl")]
pub fn crawl(page: u64, size: u64) -> Result<u32, String> {
    if size == 0 || page >= size {
        return Err(format!("page {page} is not in a site of {size} pages"));
    }
    let links = links_of(page, size);
    let Some(ctx) = crate::ctx() else {
        for l in links {
            lovage_pool::process::scope::spawn_keyed(&page_key(l), crawl::s(l, size)).map_err(
                |_| "lovage.crawl spawns its links: run it on a lovage worker or in a process pool's scope",
            )?;
        }
        return Ok(links.len() as u32);
    };
    let keys: Vec<(u64, String)> = links.iter().map(|&l| (l, page_key(l))).collect();
    // One call for the page's links: a few broker writes, not a few per link.
    ctx.spawn_keyed_many(keys.iter().map(|(l, k)| (k.as_str(), crawl::s(*l, size))))
        .map_err(|e| format!("spawning the links of page {page}: {e}"))?;
    Ok(links.len() as u32)
}

/// The crawl on a thread pool: tasks spawning tasks in `pool.scope`, which returns when every
/// one has finished (the seeds' `queue.join()` in one process); returns the pages fetched.
pub fn on_threads(pool: &ThreadPool, size: u64) -> usize {
    let seen = Mutex::new(HashSet::from([0u64]));
    let fetched = AtomicUsize::new(0);
    fn visit<'s>(
        s: &'s crate::Scope<'s, '_>,
        page: u64,
        size: u64,
        seen: &'s Mutex<HashSet<u64>>,
        fetched: &'s AtomicUsize,
    ) {
        fetched.fetch_add(1, Ordering::Relaxed);
        let links = links_of(page, size);
        let new: Vec<u64> = {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            links.into_iter().filter(|l| seen.insert(*l)).collect()
        };
        for l in new {
            s.spawn(move || visit(s, l, size, seen, fetched));
        }
    }
    pool.scope(|s| s.spawn(|| visit(s, 0, size, &seen, &fetched)));
    fetched.into_inner()
}

/// The crawl on a process pool: `lovage.crawl` in each child spawns its links into
/// `pool.scope`, which returns when every one has finished; returns the scope's report.
pub fn on_processes(pool: &crate::ProcessPool, size: u64) -> crate::ProcessScopeReport<()> {
    pool.scope(|s| {
        // A signature of plain integers always encodes.
        let _ = s.spawn_keyed(&page_key(0), crawl::s(0, size));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_crawl_fetches_every_reachable_page_once() {
        let pool = ThreadPool::new(2);
        let size = 3_000;
        let expected = reachable(size);
        assert!(
            expected > 1_000,
            "most of the site is reachable: {expected}"
        );
        assert_eq!(on_threads(&pool, size), expected);
    }

    #[test]
    fn outside_a_worker_the_crawl_task_says_what_it_needs() {
        let err = crawl(0, 10).unwrap_err();
        assert!(err.contains("lovage worker or in a process pool"), "{err}");
        assert!(crawl(10, 10).unwrap_err().contains("not in a site"));
    }
}
