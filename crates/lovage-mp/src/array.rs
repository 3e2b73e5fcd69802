//! `Array<T>`: a fixed-length array of plain-old-data shared by processes.
//!
//! Mutable slices come two ways: the whole array under its lock ([`Array::get_lock`]), or a
//! range [`claim`](Array::claim)ed for this thread, so processes filling disjoint ranges do not
//! wait for each other. Claims are recorded in the object itself (under the lock, briefly), so
//! two overlapping `&mut` slices can never exist, in one process or across several; a claim
//! whose thread died is void.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::lock::{wrap, LockGuard, LockResult};
use crate::object::{handle_serde, ElemType, Kind, Object};
use crate::pod::{self, AtomicInt};
use crate::sys::robust::{self, Taken};
use crate::sys::{alive, futex, tid};

/// Ranges claimed at once, at most.
const CLAIMS: usize = 64;
/// The claim table follows the lock word and the claim generation.
const TABLE: usize = 64;
/// The elements start after the table.
const DATA: usize = TABLE + CLAIMS * std::mem::size_of::<Claim>();

/// One claimed range; `tid == 0` is an empty slot. Read and written only under the lock.
#[repr(C)]
#[derive(Clone, Copy)]
struct Claim {
    start: u64,
    end: u64,
    tid: u32,
    _pad: u32,
}

/// A `[T]` in shared memory (Python's `multiprocessing.Array`).
pub struct Array<T: Pod> {
    obj: Object,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            obj: self.obj.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

handle_serde!(Array<T: Pod>, Kind::Array, ElemType::of::<T>());

impl<T: Pod> Array<T> {
    /// `len` zeroed elements.
    pub fn new(len: usize) -> Result<Array<T>> {
        if std::mem::align_of::<T>() > 64 {
            return Err(Error::Invalid(format!(
                "{} is aligned to more than 64 bytes",
                std::any::type_name::<T>()
            )));
        }
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(DATA))
            .ok_or_else(|| Error::Invalid(format!("an Array of {len} elements is too large")))?;
        let obj = Object::create(
            Kind::Array,
            ElemType::of::<T>(),
            len as u64,
            bytes.max(DATA + 1),
        )?;
        Array::from_object(obj)
    }

    /// A new array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Array::new(items.len())?;
        a.get_lock()
            .unwrap_or_else(|d| d.into_guard())
            .copy_from_slice(items);
        Ok(a)
    }

    fn from_object(obj: Object) -> Result<Array<T>> {
        let len = usize::try_from(obj.len())
            .map_err(|_| Error::NotLovage("an Array longer than memory".into()))?;
        let need = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(DATA));
        if need.is_none_or(|n| n > obj.state_len()) {
            return Err(Error::NotLovage(format!(
                "an Array of {len} elements in {} bytes",
                obj.state_len()
            )));
        }
        Ok(Array {
            obj,
            len,
            _t: PhantomData,
        })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn words(&self) -> (&AtomicU32, &AtomicU32) {
        let p = self.obj.state().cast::<AtomicU32>();
        // SAFETY: the lock word and the claim generation start the state, which outlives `self`.
        unsafe { (&*p, &*p.add(1)) }
    }

    /// How many threads wait for a claim to end (so a release without waiters makes no call).
    fn sleepers(&self) -> &AtomicU32 {
        // SAFETY: the third word of the state.
        unsafe { &*self.obj.state().cast::<AtomicU32>().add(2) }
    }

    /// Sleeps until the claims change (or a short while passes: a claimer may die silently).
    fn wait_claims(&self, seen: u32) {
        let sleepers = self.sleepers();
        sleepers.fetch_add(1, Ordering::SeqCst);
        futex::wait(self.words().1, seen, Some(Duration::from_millis(20)));
        sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Tells waiters the claims changed.
    fn claims_changed(&self) {
        let generation = self.words().1;
        generation.fetch_add(1, Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            futex::wake_all(generation);
        }
    }

    fn claims(&self) -> *mut Claim {
        // SAFETY: the table lies inside the state (from_object checked DATA fits).
        unsafe { self.obj.state().add(TABLE).cast::<Claim>() }
    }

    fn data(&self) -> *mut T {
        // SAFETY: the elements start at DATA (64-aligned), checked to fit by from_object.
        unsafe { self.obj.state().add(DATA).cast::<T>() }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, i: usize) -> Result<()> {
        if i >= self.len {
            return Err(Error::Invalid(format!(
                "index {i} out of range for an Array of {} elements",
                self.len
            )));
        }
        Ok(())
    }

    /// Element `i` (atomic for 1-, 2-, 4- and 8-byte types; never a torn read of one).
    pub fn load(&self, i: usize) -> Result<T> {
        self.check(i)?;
        if pod::is_atomic::<T>() {
            // SAFETY: in range, aligned (DATA is 64-aligned and T's size is its alignment or a
            // multiple of it).
            return Ok(unsafe { pod::load(self.data().add(i)) });
        }
        Ok(self.get_lock().unwrap_or_else(|d| d.into_guard())[i])
    }

    /// Sets element `i`.
    pub fn store(&self, i: usize, v: T) -> Result<()> {
        self.check(i)?;
        if pod::is_atomic::<T>() {
            // SAFETY: as in load.
            unsafe { pod::store(self.data().add(i), v) };
            return Ok(());
        }
        self.get_lock().unwrap_or_else(|d| d.into_guard())[i] = v;
        Ok(())
    }

    /// A copy of every element, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.get_lock().unwrap_or_else(|d| d.into_guard()).to_vec()
    }

    /// Takes the array's lock once no range is claimed; the guard is the whole `[T]`.
    pub fn get_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let (word, generation) = self.words();
        let mut died = None;
        loop {
            let seen = generation.load(Ordering::Acquire);
            if let Some(Taken::OwnerDied(owner)) = robust::lock(word, None) {
                died = Some(owner);
            }
            let lock = LockGuard::new(word);
            if !self.any_overlap(0..self.len) {
                let guard = ArrayGuard {
                    array: self,
                    _lock: lock,
                    ptr: self.data(),
                    len: self.len,
                    _t: PhantomData,
                };
                return wrap(died.map_or(Taken::Clean, Taken::OwnerDied), guard);
            }
            drop(lock);
            self.wait_claims(seen);
        }
    }

    /// Claims `range` for this thread, waiting while another claim or the lock covers part of
    /// it. The chunk is `&mut [T]` over the range; dropping it ends the claim.
    pub fn claim(&self, range: Range<usize>) -> Result<Chunk<'_, T>> {
        if range.start > range.end || range.end > self.len {
            return Err(Error::Invalid(format!(
                "range {range:?} out of bounds for an Array of {} elements",
                self.len
            )));
        }
        let (word, generation) = self.words();
        loop {
            let seen = generation.load(Ordering::Acquire);
            robust::lock(word, None);
            let lock = LockGuard::new(word);
            if !self.any_overlap(range.clone()) {
                if let Some(slot) = self.free_slot() {
                    // SAFETY: the table is only touched under the lock, which we hold.
                    unsafe {
                        self.claims().add(slot).write(Claim {
                            start: range.start as u64,
                            end: range.end as u64,
                            tid: tid(),
                            _pad: 0,
                        })
                    };
                    drop(lock);
                    return Ok(Chunk {
                        array: self,
                        slot,
                        range,
                        _not_send: PhantomData,
                    });
                }
            }
            drop(lock);
            self.wait_claims(seen);
        }
    }

    /// Under the lock: does a live claim overlap `range`? Clears the claims of dead threads.
    fn any_overlap(&self, range: Range<usize>) -> bool {
        let mut found = false;
        for i in 0..CLAIMS {
            // SAFETY: in the table; we hold the lock.
            let c = unsafe { &mut *self.claims().add(i) };
            if c.tid == 0 {
                continue;
            }
            if !alive(c.tid) {
                c.tid = 0;
                continue;
            }
            let (s, e) = (c.start as usize, c.end as usize);
            if s < range.end && range.start < e {
                found = true;
            }
        }
        found
    }

    fn free_slot(&self) -> Option<usize> {
        // SAFETY: in the table; we hold the lock.
        (0..CLAIMS).find(|&i| unsafe { (*self.claims().add(i)).tid } == 0)
    }
}

impl<T: AtomicInt> Array<T> {
    /// Adds `v` to element `i` atomically (wrapping), returning the previous value.
    pub fn fetch_add(&self, i: usize, v: T) -> Result<T> {
        self.check(i)?;
        // SAFETY: in range and aligned.
        Ok(T::fetch_add_at(unsafe { self.data().add(i) }, v))
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("len", &self.len).finish()
    }
}

/// The whole array, under its lock.
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    _lock: LockGuard<'a>,
    ptr: *mut T,
    len: usize,
    _t: PhantomData<&'a mut [T]>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lock is held and no range is claimed, so nobody else writes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        // A claim waits for the lock's holder too; the lock itself is released just after.
        self.array.claims_changed();
    }
}

/// A claimed range of an [`Array`], as `&mut [T]`.
pub struct Chunk<'a, T: Pod> {
    array: &'a Array<T>,
    slot: usize,
    range: Range<usize>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> Chunk<'_, T> {
    /// The indices this chunk covers.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl<T: Pod> Deref for Chunk<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the range is claimed by this thread: no overlapping claim or lock guard exists.
        unsafe {
            std::slice::from_raw_parts(self.array.data().add(self.range.start), self.range.len())
        }
    }
}

impl<T: Pod> DerefMut for Chunk<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.array.data().add(self.range.start),
                self.range.len(),
            )
        }
    }
}

impl<T: Pod> Drop for Chunk<'_, T> {
    fn drop(&mut self) {
        let word = self.array.words().0;
        robust::lock(word, None);
        // SAFETY: our own slot, under the lock.
        unsafe { (*self.array.claims().add(self.slot)).tid = 0 };
        robust::unlock(word);
        self.array.claims_changed();
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Chunk<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("range", &self.range)
            .field("items", &&**self)
            .finish()
    }
}
