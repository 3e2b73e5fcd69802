//! The shared ring a `Queue` is: length-prefixed messages in a byte ring, under a robust lock.
//!
//! A message is never torn, even when its writer is killed mid-copy: bytes are copied under the
//! lock, beyond the tail, where nobody reads; then the new head/tail/count are written to a
//! journal, the journal is marked valid, and only then applied. Whoever takes the lock from a
//! dead holder replays a valid journal (its values are absolute, so replaying twice is
//! harmless) or, without one, finds the ring exactly as before the dead holder's operation.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::object::{Kind, Object};
use crate::sys::futex;
use crate::sys::robust::{self, Taken};

/// Bytes before each message: its length.
const PREFIX: usize = 4;
/// Control words, then the ring.
const RING: usize = 256;

const JOURNAL_NONE: u64 = 0;
const JOURNAL_PUT: u64 = 1;
const JOURNAL_GET: u64 = 2;

/// The control block at the start of a queue's state.
#[repr(C)]
struct Control {
    lock: AtomicU32,
    closed: AtomicU32,
    /// Bumped by every put; consumers sleep on it.
    put_seq: AtomicU32,
    get_waiters: AtomicU32,
    /// Bumped by every get; producers sleep on it.
    get_seq: AtomicU32,
    put_waiters: AtomicU32,
    /// Bumped by every task_done; `join` sleeps on it.
    done_seq: AtomicU32,
    join_waiters: AtomicU32,
    _pad0: [u32; 8],
    // Second cache line: the ring's state, written under the lock.
    head: AtomicU64,
    tail: AtomicU64,
    count: AtomicU64,
    puts: AtomicU64,
    done: AtomicU64,
    maxsize: AtomicU64,
    capacity: AtomicU64,
    _pad1: u64,
    // Third cache line: the journal.
    j_kind: AtomicU64,
    j_head: AtomicU64,
    j_tail: AtomicU64,
    j_count: AtomicU64,
    j_puts: AtomicU64,
}

/// A ring mapped in this process.
#[derive(Clone)]
pub(crate) struct Ring {
    obj: Object,
    cap: usize,
}

/// How long to spin, watching the ring, before sleeping: a consumer on another core usually
/// sees the next message within a few microseconds, far less than a futex round trip.
const SPIN: u32 = 2000;

impl Ring {
    /// A new ring of `capacity` bytes holding at most `maxsize` messages (0: no limit).
    pub(crate) fn create(
        capacity: usize,
        maxsize: u64,
        ty: crate::object::ElemType,
    ) -> Result<Ring> {
        if capacity < 64 {
            return Err(Error::Invalid(format!(
                "a queue of {capacity} bytes (64 at least)"
            )));
        }
        let obj = Object::create(Kind::Queue, ty, capacity as u64, RING + capacity)?;
        let ring = Ring::from_object(obj)?;
        let c = ring.control();
        c.maxsize.store(
            if maxsize == 0 { u64::MAX } else { maxsize },
            Ordering::Relaxed,
        );
        c.capacity.store(capacity as u64, Ordering::Relaxed);
        Ok(ring)
    }

    pub(crate) fn from_object(obj: Object) -> Result<Ring> {
        let cap = usize::try_from(obj.len()).unwrap_or(usize::MAX);
        if obj.state_len() < RING || obj.state_len() - RING < cap {
            return Err(Error::NotLovage("a queue shorter than its ring".into()));
        }
        Ok(Ring { obj, cap })
    }

    pub(crate) fn object(&self) -> &Object {
        &self.obj
    }

    fn control(&self) -> &Control {
        // SAFETY: the state starts with the control block (RING bytes, 64-aligned), which lives
        // as long as `obj`; all its fields are atomics.
        unsafe { &*self.obj.state().cast::<Control>() }
    }

    fn ring(&self) -> *mut u8 {
        // SAFETY: from_object checked the ring fits in the state.
        unsafe { self.obj.state().add(RING) }
    }

    /// The largest message this ring takes.
    pub(crate) fn max_message(&self) -> usize {
        self.cap - PREFIX
    }

    /// Takes the lock, replaying a dead holder's journal.
    fn lock(&self) -> RingGuard<'_> {
        let c = self.control();
        if let Some(Taken::OwnerDied(_)) = robust::lock(&c.lock, None) {
            self.recover();
        }
        RingGuard { ring: self }
    }

    #[cold]
    fn recover(&self) {
        let c = self.control();
        match c.j_kind.load(Ordering::Acquire) {
            JOURNAL_PUT => {
                c.tail
                    .store(c.j_tail.load(Ordering::Relaxed), Ordering::Relaxed);
                c.count
                    .store(c.j_count.load(Ordering::Relaxed), Ordering::Relaxed);
                c.puts
                    .store(c.j_puts.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            JOURNAL_GET => {
                c.head
                    .store(c.j_head.load(Ordering::Relaxed), Ordering::Relaxed);
                c.count
                    .store(c.j_count.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            _ => {}
        }
        c.j_kind.store(JOURNAL_NONE, Ordering::Release);
    }

    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let start = (at % self.cap as u64) as usize;
        let first = bytes.len().min(self.cap - start);
        // SAFETY: both pieces lie inside the ring; we hold the lock, and these bytes are beyond
        // the tail, where no reader looks.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring().add(start), first);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(first),
                self.ring(),
                bytes.len() - first,
            );
        }
    }

    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let start = (at % self.cap as u64) as usize;
        let first = out.len().min(self.cap - start);
        // SAFETY: inside the ring, between head and tail, under the lock.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring().add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring(),
                out.as_mut_ptr().add(first),
                out.len() - first,
            );
        }
    }

    /// Appends `msg`, waiting for room until `deadline`.
    pub(crate) fn put(&self, msg: &[u8], deadline: Option<Instant>) -> Result<()> {
        if msg.len() > self.max_message() {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.max_message(),
            });
        }
        let c = self.control();
        let need = (PREFIX + msg.len()) as u64;
        let mut spins = 0;
        loop {
            let g = self.lock();
            if c.closed.load(Ordering::Relaxed) != 0 {
                return Err(Error::Closed);
            }
            let head = c.head.load(Ordering::Relaxed);
            let tail = c.tail.load(Ordering::Relaxed);
            let count = c.count.load(Ordering::Relaxed);
            if count < c.maxsize.load(Ordering::Relaxed) && self.cap as u64 - (tail - head) >= need
            {
                self.copy_in(tail, &(msg.len() as u32).to_le_bytes());
                self.copy_in(tail + PREFIX as u64, msg);
                c.j_tail.store(tail + need, Ordering::Relaxed);
                c.j_count.store(count + 1, Ordering::Relaxed);
                c.j_puts
                    .store(c.puts.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                c.j_kind.store(JOURNAL_PUT, Ordering::Release);
                c.tail.store(tail + need, Ordering::Release);
                c.count.store(count + 1, Ordering::Relaxed);
                c.puts.fetch_add(1, Ordering::Relaxed);
                c.j_kind.store(JOURNAL_NONE, Ordering::Release);
                c.put_seq.fetch_add(1, Ordering::Release);
                drop(g);
                if c.get_waiters.load(Ordering::SeqCst) != 0 {
                    futex::wake(&c.put_seq, 1);
                }
                return Ok(());
            }
            // Full: watch for a get, then sleep until one.
            let seen = c.get_seq.load(Ordering::Acquire);
            if spins < SPIN {
                drop(g);
                while spins < SPIN && c.get_seq.load(Ordering::Acquire) == seen {
                    spins += 1;
                    std::hint::spin_loop();
                }
                continue;
            }
            c.put_waiters.fetch_add(1, Ordering::SeqCst);
            drop(g);
            let r = sleep(&c.get_seq, seen, deadline);
            c.put_waiters.fetch_sub(1, Ordering::SeqCst);
            r?;
            spins = 0;
        }
    }

    /// Takes the oldest message into `out` (replacing its contents), waiting until `deadline`
    /// (`Timeout` then, with a zero duration the caller fills in).
    pub(crate) fn get(&self, out: &mut Vec<u8>, deadline: Option<Instant>) -> Result<()> {
        let c = self.control();
        let mut spins = 0;
        loop {
            let g = self.lock();
            let head = c.head.load(Ordering::Relaxed);
            let tail = c.tail.load(Ordering::Relaxed);
            if head != tail {
                let mut len = [0u8; PREFIX];
                self.copy_out(head, &mut len);
                let len = u32::from_le_bytes(len) as usize;
                if len > self.max_message() || (PREFIX + len) as u64 > tail - head {
                    return Err(Error::NotLovage(format!(
                        "queue holds a message of {len} bytes with {} bytes queued: corrupt",
                        tail - head
                    )));
                }
                out.clear();
                out.resize(len, 0);
                self.copy_out(head + PREFIX as u64, out);
                let new_head = head + (PREFIX + len) as u64;
                let count = c.count.load(Ordering::Relaxed).saturating_sub(1);
                c.j_head.store(new_head, Ordering::Relaxed);
                c.j_count.store(count, Ordering::Relaxed);
                c.j_kind.store(JOURNAL_GET, Ordering::Release);
                c.head.store(new_head, Ordering::Release);
                c.count.store(count, Ordering::Relaxed);
                c.j_kind.store(JOURNAL_NONE, Ordering::Release);
                c.get_seq.fetch_add(1, Ordering::Release);
                drop(g);
                if c.put_waiters.load(Ordering::SeqCst) != 0 {
                    futex::wake(&c.get_seq, 1);
                }
                return Ok(());
            }
            if c.closed.load(Ordering::Relaxed) != 0 {
                return Err(Error::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(Duration::ZERO));
            }
            let seen = c.put_seq.load(Ordering::Acquire);
            if spins < SPIN {
                drop(g);
                while spins < SPIN && c.put_seq.load(Ordering::Acquire) == seen {
                    spins += 1;
                    std::hint::spin_loop();
                }
                continue;
            }
            c.get_waiters.fetch_add(1, Ordering::SeqCst);
            drop(g);
            let r = sleep(&c.put_seq, seen, deadline);
            c.get_waiters.fetch_sub(1, Ordering::SeqCst);
            r?;
            spins = 0;
        }
    }

    /// Refuses further puts; gets drain what is queued, then fail with `Closed`.
    pub(crate) fn close(&self) {
        let c = self.control();
        let g = self.lock();
        c.closed.store(1, Ordering::Relaxed);
        c.put_seq.fetch_add(1, Ordering::Release);
        c.get_seq.fetch_add(1, Ordering::Release);
        drop(g);
        futex::wake_all(&c.put_seq);
        futex::wake_all(&c.get_seq);
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.control().closed.load(Ordering::Relaxed) != 0
    }

    /// Messages queued now.
    pub(crate) fn len(&self) -> usize {
        let c = self.control();
        let _g = self.lock();
        c.count.load(Ordering::Relaxed) as usize
    }

    /// One message put has been handled (`JoinableQueue::task_done`).
    pub(crate) fn task_done(&self) -> Result<()> {
        let c = self.control();
        let mut done = c.done.load(Ordering::Acquire);
        loop {
            if done >= c.puts.load(Ordering::Acquire) {
                return Err(Error::Invalid(
                    "task_done called more times than items were put".into(),
                ));
            }
            match c
                .done
                .compare_exchange(done, done + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(d) => done = d,
            }
        }
        c.done_seq.fetch_add(1, Ordering::Release);
        if c.join_waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&c.done_seq);
        }
        Ok(())
    }

    /// Waits until every message put has had its `task_done`.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<()> {
        let c = self.control();
        loop {
            let seen = c.done_seq.load(Ordering::Acquire);
            if c.done.load(Ordering::Acquire) >= c.puts.load(Ordering::Acquire) {
                return Ok(());
            }
            c.join_waiters.fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing ourselves, so a task_done in between is not missed.
            let r = if c.done.load(Ordering::Acquire) >= c.puts.load(Ordering::Acquire) {
                Ok(())
            } else {
                sleep(&c.done_seq, seen, deadline)
            };
            c.join_waiters.fetch_sub(1, Ordering::SeqCst);
            r?;
        }
    }
}

/// Sleeps on `word` while it is `seen`, until `deadline`; a short cap on each sleep keeps a
/// missed wake from becoming a hang.
fn sleep(word: &AtomicU32, seen: u32, deadline: Option<Instant>) -> Result<()> {
    let mut t = Duration::from_millis(100);
    if let Some(d) = deadline {
        let now = Instant::now();
        if now >= d {
            return Err(Error::Timeout(Duration::ZERO));
        }
        t = t.min(d - now);
    }
    futex::wait(word, seen, Some(t));
    Ok(())
}

struct RingGuard<'a> {
    ring: &'a Ring,
}

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        robust::unlock(&self.ring.control().lock);
    }
}
