//! The robust lock word every lock-like object is built on: 0 when free, else the owner's
//! thread id, with a bit that says someone sleeps on it. A waiter that finds the owner gone
//! (exited, killed -9, a zombie) takes the word over and says so.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{alive, futex, tid};

/// Set while a waiter may be asleep on the word: the releaser must wake one.
const WAITERS: u32 = 1 << 31;
const OWNER: u32 = !WAITERS;

/// How often a sleeping waiter checks that the owner still lives.
const LIVENESS_POLL: Duration = Duration::from_millis(20);

/// How a word was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// From a release.
    Clean,
    /// From a dead owner, whose thread id this is.
    OwnerDied(u32),
}

/// Takes the word without sleeping, if it is free or its owner is dead.
pub(crate) fn try_lock(word: &AtomicU32) -> Option<Taken> {
    let me = tid();
    let cur = word.load(Ordering::Relaxed);
    if cur == 0 {
        return word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Taken::Clean);
    }
    let owner = cur & OWNER;
    if owner != me && !alive(owner) {
        return word
            .compare_exchange(
                cur,
                me | (cur & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| Taken::OwnerDied(owner));
    }
    None
}

/// Takes the word, sleeping until it is released, its owner dies or `deadline` passes (`None`
/// when it passes first).
pub(crate) fn lock(word: &AtomicU32, deadline: Option<Instant>) -> Option<Taken> {
    let me = tid();
    if word
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Some(Taken::Clean);
    }
    lock_slow(word, me, deadline)
}

#[cold]
fn lock_slow(word: &AtomicU32, me: u32, deadline: Option<Instant>) -> Option<Taken> {
    let mut spins = 0u32;
    let mut checked = Instant::now();
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            // Someone else may still sleep here, so keep the bit: one spare wake is cheap, a
            // lost one is a hang.
            if word
                .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Taken::Clean);
            }
            continue;
        }
        if spins < 64 {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        let owner = cur & OWNER;
        if checked.elapsed() >= LIVENESS_POLL {
            checked = Instant::now();
            if owner != me && !alive(owner) {
                if word
                    .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Taken::OwnerDied(owner));
                }
                continue;
            }
        }
        if cur & WAITERS == 0
            && word
                .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let mut sleep = LIVENESS_POLL;
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return None;
            }
            sleep = sleep.min(d - now);
        }
        futex::wait(word, cur | WAITERS, Some(sleep));
    }
}

/// Releases a word this thread holds.
pub(crate) fn unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        futex::wake(word, 1);
    }
}

/// The thread holding the word, if any.
pub(crate) fn owner(word: &AtomicU32) -> u32 {
    word.load(Ordering::Relaxed) & OWNER
}

/// True when this thread holds the word.
pub(crate) fn held_by_me(word: &AtomicU32) -> bool {
    owner(word) == tid()
}
