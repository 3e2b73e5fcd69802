//! The unsafe parts, kept small: futexes, shared mappings and thread identity.

pub(crate) mod futex;
pub(crate) mod map;
pub(crate) mod robust;

use std::cell::Cell;

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// This thread's kernel id, the owner mark a lock word holds. Cached: `gettid` is a system call
/// and a lock's fast path must not make one. (Children are started by `exec`, never by a bare
/// `fork`, so a cached id is never inherited by another thread.)
pub(crate) fn tid() -> u32 {
    TID.with(|c| {
        let t = c.get();
        if t != 0 {
            return t;
        }
        // SAFETY: gettid has no preconditions.
        let t = unsafe { libc::gettid() } as u32;
        c.set(t);
        t
    })
}

/// True when the thread (or process) `tid` still runs: it exists and is not a zombie (a process
/// killed -9 whose parent has not reaped it yet holds nothing any more). A thread id can be
/// reused after its owner is gone; lovage accepts that small window, as the docs say.
pub(crate) fn alive(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself hold any byte.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | Some("x"))
}
