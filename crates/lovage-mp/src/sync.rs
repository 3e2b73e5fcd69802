//! `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and `Barrier` across processes, each a
//! few futex words in shared memory.
//!
//! Only locks are robust (a dead holder is detected): a semaphore or barrier cannot know which
//! process would have released it, as with Python's.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{deadline, wrap, LockResult};
use crate::object::{handle_serde, ElemType, Kind, Object};
use crate::sys::futex;
use crate::sys::robust::{self, Taken};

fn word(obj: &Object, i: usize) -> &AtomicU32 {
    // SAFETY: every object here has at least 64 bytes of state (16 words), 64-aligned, alive
    // as long as `obj`; callers pass i < 16.
    unsafe { &*obj.state().cast::<AtomicU32>().add(i) }
}

/// Sleeps on `w` while it holds `seen`, until `until`; false once `until` has passed.
fn sleep(w: &AtomicU32, seen: u32, until: Option<Instant>) -> bool {
    match until {
        None => futex::wait(w, seen, None),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return false;
            }
            futex::wait(w, seen, Some(d - now));
        }
    }
    true
}

/// A counting semaphore shared by processes (Python's `multiprocessing.Semaphore`).
#[derive(Clone)]
pub struct Semaphore {
    obj: Object,
}

handle_serde!(Semaphore, Kind::Semaphore, ElemType::none());

// Words: 0 count, 1 waiters, 2 bound, 3 bounded (0 or 1).
impl Semaphore {
    /// A semaphore with `value` permits.
    pub fn new(value: u32) -> Result<Semaphore> {
        let obj = Object::create(Kind::Semaphore, ElemType::none(), 0, 64)?;
        word(&obj, 0).store(value, Ordering::Relaxed);
        Ok(Semaphore { obj })
    }

    fn from_object(obj: Object) -> Result<Semaphore> {
        Ok(Semaphore { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn acquire_until(&self, until: Option<Instant>) -> bool {
        let (count, waiters) = (word(&self.obj, 0), word(&self.obj, 1));
        loop {
            let c = count.load(Ordering::Acquire);
            if c > 0 {
                if count
                    .compare_exchange(c, c - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            waiters.fetch_add(1, Ordering::SeqCst);
            let more = sleep(count, 0, until);
            waiters.fetch_sub(1, Ordering::SeqCst);
            if !more {
                return false;
            }
        }
    }

    /// Takes a permit, waiting for one.
    pub fn acquire(&self) {
        self.acquire_until(None);
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.acquire_until(Some(Instant::now()))
    }

    /// Takes a permit, waiting at most `timeout`; false if none came.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.acquire_until(deadline(timeout))
    }

    /// Returns a permit. For a bounded semaphore, more releases than acquires is an error.
    pub fn release(&self) -> Result<()> {
        let (count, waiters) = (word(&self.obj, 0), word(&self.obj, 1));
        let bounded = word(&self.obj, 3).load(Ordering::Relaxed) != 0;
        let bound = word(&self.obj, 2).load(Ordering::Relaxed);
        let mut c = count.load(Ordering::Acquire);
        loop {
            if bounded && c >= bound {
                return Err(Error::Invalid(format!(
                    "BoundedSemaphore released more times than acquired (bound {bound})"
                )));
            }
            match count.compare_exchange(c, c + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        if waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(count, 1);
        }
        Ok(())
    }

    /// Free permits now.
    pub fn value(&self) -> u32 {
        word(&self.obj, 0).load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

/// A semaphore that refuses to be released above its initial value (Python's
/// `BoundedSemaphore`). Derefs to [`Semaphore`].
#[derive(Clone, Debug)]
pub struct BoundedSemaphore {
    sem: Semaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` permits, never more.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        let sem = Semaphore::new(value)?;
        word(&sem.obj, 2).store(value, Ordering::Relaxed);
        word(&sem.obj, 3).store(1, Ordering::Relaxed);
        Ok(BoundedSemaphore { sem })
    }
}

impl std::ops::Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.sem
    }
}

impl serde::Serialize for BoundedSemaphore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.sem.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(BoundedSemaphore {
            sem: Semaphore::deserialize(d)?,
        })
    }
}

/// A flag processes wait for (Python's `multiprocessing.Event`).
#[derive(Clone)]
pub struct Event {
    obj: Object,
}

handle_serde!(Event, Kind::Event, ElemType::none());

// Words: 0 flag, 1 waiters.
impl Event {
    /// A new, clear event.
    pub fn new() -> Result<Event> {
        Ok(Event {
            obj: Object::create(Kind::Event, ElemType::none(), 0, 64)?,
        })
    }

    fn from_object(obj: Object) -> Result<Event> {
        Ok(Event { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let flag = word(&self.obj, 0);
        flag.store(1, Ordering::Release);
        if word(&self.obj, 1).load(Ordering::SeqCst) != 0 {
            futex::wake_all(flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        word(&self.obj, 0).store(0, Ordering::Release);
    }

    /// True while set.
    pub fn is_set(&self) -> bool {
        word(&self.obj, 0).load(Ordering::Acquire) != 0
    }

    fn wait_until(&self, until: Option<Instant>) -> bool {
        let (flag, waiters) = (word(&self.obj, 0), word(&self.obj, 1));
        while !self.is_set() {
            waiters.fetch_add(1, Ordering::SeqCst);
            let more = sleep(flag, 0, until);
            waiters.fetch_sub(1, Ordering::SeqCst);
            if !more {
                return self.is_set();
            }
        }
        true
    }

    /// Waits until set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout`; true if the flag is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline(timeout))
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

/// A condition variable with its own robust lock, shared by processes (Python's
/// `multiprocessing.Condition`): [`acquire`](Condition::acquire) the lock, then
/// [`ConditionGuard::wait`] releases it while sleeping and takes it back.
#[derive(Clone)]
pub struct Condition {
    obj: Object,
}

handle_serde!(Condition, Kind::Condition, ElemType::none());

// Words: 0 lock, 1 sequence (bumped by every notify), 2 waiters.
impl Condition {
    /// A new condition with its lock free.
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            obj: Object::create(Kind::Condition, ElemType::none(), 0, 64)?,
        })
    }

    fn from_object(obj: Object) -> Result<Condition> {
        Ok(Condition { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn guard(&self, taken: Taken) -> LockResult<ConditionGuard<'_>> {
        wrap(
            taken,
            ConditionGuard {
                cond: self,
                _not_send: PhantomData,
            },
        )
    }

    /// Takes the condition's lock.
    pub fn acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.guard(robust::lock(word(&self.obj, 0), None).unwrap_or(Taken::Clean))
    }

    /// Wakes up to `n` waiters.
    pub fn notify(&self, n: u32) {
        let seq = word(&self.obj, 1);
        seq.fetch_add(1, Ordering::Release);
        if word(&self.obj, 2).load(Ordering::SeqCst) != 0 {
            futex::wake(seq, n.min(i32::MAX as u32) as i32);
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").finish()
    }
}

/// The lock of a [`Condition`], held; released when dropped.
#[derive(Debug)]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: PhantomData<*const ()>,
}

impl<'a> ConditionGuard<'a> {
    fn wait_until(self, until: Option<Instant>) -> (LockResult<ConditionGuard<'a>>, bool) {
        let cond = self.cond;
        let (seq, waiters) = (word(&cond.obj, 1), word(&cond.obj, 2));
        let seen = seq.load(Ordering::Acquire);
        waiters.fetch_add(1, Ordering::SeqCst);
        drop(self);
        let woke = sleep(seq, seen, until);
        waiters.fetch_sub(1, Ordering::SeqCst);
        let timed_out = !woke || seq.load(Ordering::Acquire) == seen;
        (cond.acquire(), timed_out)
    }

    /// Releases the lock, sleeps until notified (or spuriously: check your predicate in a
    /// loop), and takes the lock back.
    pub fn wait(self) -> LockResult<ConditionGuard<'a>> {
        self.wait_until(None).0
    }

    /// As [`wait`](ConditionGuard::wait), at most `timeout`; the flag is true when no notify
    /// came.
    pub fn wait_timeout(self, timeout: Duration) -> (LockResult<ConditionGuard<'a>>, bool) {
        self.wait_until(deadline(timeout))
    }

    /// Waits until `done()` holds (checked under the lock), at most `timeout` if given; false
    /// if it timed out first.
    pub fn wait_for(
        mut self,
        mut done: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> (LockResult<ConditionGuard<'a>>, bool) {
        let until = timeout.and_then(deadline);
        let mut died = None;
        loop {
            if done() {
                return (self.into_result(died), true);
            }
            if until.is_some_and(|d| Instant::now() >= d) {
                return (self.into_result(died), false);
            }
            let (r, _) = self.wait_until(until);
            self = match r {
                Ok(g) => g,
                Err(d) => {
                    died = Some(d.previous_owner());
                    d.into_guard()
                }
            };
        }
    }

    fn into_result(self, died: Option<u32>) -> LockResult<ConditionGuard<'a>> {
        wrap(died.map_or(Taken::Clean, Taken::OwnerDied), self)
    }

    /// Wakes up to `n` waiters (the lock may be held, as in Python).
    pub fn notify(&self, n: u32) {
        self.cond.notify(n)
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.cond.notify_all()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        robust::unlock(word(&self.cond.obj, 0));
    }
}

/// `n` processes (or threads) wait until all have arrived (Python's `multiprocessing.Barrier`).
#[derive(Clone)]
pub struct Barrier {
    obj: Object,
}

handle_serde!(Barrier, Kind::Barrier, ElemType::none());

// Words: 0 parties, 1 arrived, 2 generation.
impl Barrier {
    /// A barrier for `parties` participants.
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::Invalid("a barrier for 0 parties".into()));
        }
        let obj = Object::create(Kind::Barrier, ElemType::none(), 0, 64)?;
        word(&obj, 0).store(parties, Ordering::Relaxed);
        Ok(Barrier { obj })
    }

    fn from_object(obj: Object) -> Result<Barrier> {
        Ok(Barrier { obj })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    /// Waits until every party has called `wait`; returns true in exactly one of them (the
    /// last to arrive), like std's `is_leader`.
    pub fn wait(&self) -> bool {
        let (parties, arrived, generation) =
            (word(&self.obj, 0), word(&self.obj, 1), word(&self.obj, 2));
        let gen = generation.load(Ordering::Acquire);
        let n = arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= parties.load(Ordering::Relaxed) {
            // Reset before the generation moves: nobody can arrive for the next round until
            // they see it.
            arrived.store(0, Ordering::Release);
            generation.fetch_add(1, Ordering::AcqRel);
            futex::wake_all(generation);
            return true;
        }
        while generation.load(Ordering::Acquire) == gen {
            futex::wait(generation, gen, None);
        }
        false
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        word(&self.obj, 0).load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .finish()
    }
}
