//! `Lock` and `RLock` across processes, robust: a lock whose holder dies is not held forever.
//!
//! The next acquirer gets it with [`OwnerDied`]. The data the lock guarded may be half-updated
//! (the holder died mid-change), so the acquirer should check or repair it before going on —
//! which is why the indication is an `Err` you must look at, as with `std`'s poisoned mutexes.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::object::{handle_serde, ElemType, Kind, Object};
use crate::sys::robust::{self, Taken};

/// The lock was taken from a holder that died holding it. Holds the guard: the lock is yours.
#[derive(Debug)]
pub struct OwnerDied<G> {
    guard: G,
    owner: u32,
}

impl<G> OwnerDied<G> {
    /// The guard: the lock is held, whatever state the dead holder left behind.
    pub fn into_guard(self) -> G {
        self.guard
    }

    /// The thread id of the holder that died.
    pub fn previous_owner(&self) -> u32 {
        self.owner
    }
}

impl<G> std::fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock taken over from thread {}, which died holding it; the data it guarded may need repair",
            self.owner
        )
    }
}

impl<G: std::fmt::Debug> std::error::Error for OwnerDied<G> {}

/// What acquiring a robust lock gives: the guard, or the guard wrapped in [`OwnerDied`].
pub type LockResult<G> = std::result::Result<G, OwnerDied<G>>;

pub(crate) fn wrap<G>(taken: Taken, guard: G) -> LockResult<G> {
    match taken {
        Taken::Clean => Ok(guard),
        Taken::OwnerDied(owner) => Err(OwnerDied { guard, owner }),
    }
}

pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A mutual-exclusion lock shared by processes (Python's `multiprocessing.Lock`).
///
/// Pass it to a child as a task argument. Not recursive: a thread that acquires it twice waits
/// for itself (use [`RLock`]).
#[derive(Clone)]
pub struct Lock {
    obj: Object,
}

handle_serde!(Lock, Kind::Lock, ElemType::none());

impl Lock {
    /// A new, free lock.
    pub fn new() -> Result<Lock> {
        Lock::from_object(Object::create(Kind::Lock, ElemType::none(), 0, 64)?)
    }

    fn from_object(obj: Object) -> Result<Lock> {
        Ok(Lock { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the state is at least 64 bytes, 64-byte aligned, and lives as long as `obj`.
        unsafe { &*self.obj.state().cast::<AtomicU32>() }
    }

    /// Waits for the lock.
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        let word = self.word();
        match robust::lock(word, None) {
            Some(t) => wrap(t, LockGuard::new(word)),
            // Without a deadline the wait only ends holding the lock.
            None => wrap(Taken::Clean, LockGuard::new(word)),
        }
    }

    /// Takes the lock if nobody (living) holds it.
    pub fn try_acquire(&self) -> Option<LockResult<LockGuard<'_>>> {
        let word = self.word();
        robust::try_lock(word).map(|t| wrap(t, LockGuard::new(word)))
    }

    /// Waits for the lock at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<LockResult<LockGuard<'_>>> {
        let word = self.word();
        robust::lock(word, deadline(timeout)).map(|t| wrap(t, LockGuard::new(word)))
    }

    /// True while some thread (in any process) holds the lock.
    pub fn is_locked(&self) -> bool {
        robust::owner(self.word()) != 0
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("owner", &robust::owner(self.word()))
            .finish()
    }
}

/// Holds a [`Lock`] (or a `Value`'s or `Array`'s) until dropped. Not `Send`: the lock belongs to
/// the thread that took it.
#[derive(Debug)]
pub struct LockGuard<'a> {
    word: &'a AtomicU32,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(word: &'a AtomicU32) -> Self {
        LockGuard {
            word,
            _not_send: PhantomData,
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        robust::unlock(self.word);
    }
}

/// A recursive lock shared by processes (Python's `multiprocessing.RLock`): the thread holding
/// it may acquire it again; it is free when every guard is dropped.
#[derive(Clone)]
pub struct RLock {
    obj: Object,
}

handle_serde!(RLock, Kind::RLock, ElemType::none());

impl RLock {
    /// A new, free recursive lock.
    pub fn new() -> Result<RLock> {
        RLock::from_object(Object::create(Kind::RLock, ElemType::none(), 0, 64)?)
    }

    fn from_object(obj: Object) -> Result<RLock> {
        Ok(RLock { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn words(&self) -> (&AtomicU32, &AtomicU32) {
        let p = self.obj.state().cast::<AtomicU32>();
        // SAFETY: two aligned words inside the 64-byte state, alive as long as `obj`.
        unsafe { (&*p, &*p.add(1)) }
    }

    fn guard(&self, taken: Taken) -> LockResult<RLockGuard<'_>> {
        let (word, count) = self.words();
        // Only the holder touches the count; a dead holder's count is void.
        count.store(1, Ordering::Relaxed);
        wrap(
            taken,
            RLockGuard {
                word,
                count,
                _not_send: PhantomData,
            },
        )
    }

    fn reenter(&self) -> Option<LockResult<RLockGuard<'_>>> {
        let (word, count) = self.words();
        if robust::held_by_me(word) {
            count.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(RLockGuard {
                word,
                count,
                _not_send: PhantomData,
            }));
        }
        None
    }

    /// Waits for the lock (at once if this thread holds it).
    pub fn acquire(&self) -> LockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return g;
        }
        // Without a deadline the wait only ends holding the lock.
        self.guard(robust::lock(self.words().0, None).unwrap_or(Taken::Clean))
    }

    /// Takes the lock if free, held by this thread, or held by a dead one.
    pub fn try_acquire(&self) -> Option<LockResult<RLockGuard<'_>>> {
        self.reenter()
            .or_else(|| robust::try_lock(self.words().0).map(|t| self.guard(t)))
    }

    /// Waits for the lock at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<LockResult<RLockGuard<'_>>> {
        self.reenter()
            .or_else(|| robust::lock(self.words().0, deadline(timeout)).map(|t| self.guard(t)))
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock")
            .field("owner", &robust::owner(self.words().0))
            .finish()
    }
}

/// Holds an [`RLock`] once; the lock is released when its last guard drops.
#[derive(Debug)]
pub struct RLockGuard<'a> {
    word: &'a AtomicU32,
    count: &'a AtomicU32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            robust::unlock(self.word);
        }
    }
}
