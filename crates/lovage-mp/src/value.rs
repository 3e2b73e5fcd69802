//! `Value<T>`: one plain-old-data value shared by processes, with its own robust lock.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU32;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::lock::{wrap, LockGuard, LockResult};
use crate::object::{handle_serde, ElemType, Kind, Object};
use crate::pod::{self, AtomicInt};
use crate::sys::robust::{self, Taken};

/// Where the value sits in the state: its own cache line, away from the lock word.
const DATA: usize = 64;

/// A `T` in shared memory (Python's `multiprocessing.Value`), for integers, floats and
/// `#[repr(C)]` structs deriving `bytemuck::Pod`.
///
/// [`get`](Value::get) and [`set`](Value::set) are single atomic instructions when `T` has 1,
/// 2, 4 or 8 bytes (otherwise they take the lock); integers also have
/// [`fetch_add`](Value::fetch_add). A read-modify-write of several steps (`v.set(v.get() + 1)`)
/// is a race between processes: do it under [`get_lock`](Value::get_lock).
pub struct Value<T: Pod> {
    obj: Object,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            obj: self.obj.clone(),
            _t: PhantomData,
        }
    }
}

handle_serde!(Value<T: Pod>, Kind::Value, ElemType::of::<T>());

impl<T: Pod> Value<T> {
    /// A new shared value holding `v`.
    pub fn new(v: T) -> Result<Value<T>> {
        if std::mem::align_of::<T>() > DATA {
            return Err(Error::Invalid(format!(
                "{} is aligned to more than {DATA} bytes",
                std::any::type_name::<T>()
            )));
        }
        let obj = Object::create(
            Kind::Value,
            ElemType::of::<T>(),
            1,
            DATA + std::mem::size_of::<T>(),
        )?;
        let value = Value::from_object(obj)?;
        // SAFETY: a fresh object: nobody else sees it yet.
        unsafe { pod::store(value.ptr(), v) };
        Ok(value)
    }

    fn from_object(obj: Object) -> Result<Value<T>> {
        if obj.state_len() < DATA + std::mem::size_of::<T>() {
            return Err(Error::NotLovage("a Value shorter than its type".into()));
        }
        Ok(Value {
            obj,
            _t: PhantomData,
        })
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the state starts with the lock word, aligned, alive as long as `obj`.
        unsafe { &*self.obj.state().cast::<AtomicU32>() }
    }

    fn ptr(&self) -> *mut T {
        // SAFETY: from_object checked the state holds a T at DATA (64-aligned).
        unsafe { self.obj.state().add(DATA).cast::<T>() }
    }

    /// The value now.
    pub fn get(&self) -> T {
        if pod::is_atomic::<T>() {
            // SAFETY: an aligned T in a live mapping.
            return unsafe { pod::load(self.ptr()) };
        }
        let g = self.get_lock().unwrap_or_else(|d| d.into_guard());
        *g
    }

    /// Replaces the value.
    pub fn set(&self, v: T) {
        if pod::is_atomic::<T>() {
            // SAFETY: an aligned T in a live mapping.
            unsafe { pod::store(self.ptr(), v) };
            return;
        }
        let mut g = self.get_lock().unwrap_or_else(|d| d.into_guard());
        *g = v;
    }

    /// Takes the value's lock; the guard reads and writes the value. For compound updates.
    pub fn get_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let word = self.word();
        let taken = robust::lock(word, None).unwrap_or(Taken::Clean);
        wrap(
            taken,
            ValueGuard {
                _lock: LockGuard::new(word),
                ptr: self.ptr(),
                _t: PhantomData,
            },
        )
    }
}

impl<T: AtomicInt> Value<T> {
    /// Adds `v` atomically (wrapping), returning the previous value.
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add_at(self.ptr(), v)
    }

    /// Subtracts `v` atomically (wrapping), returning the previous value.
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub_at(self.ptr(), v)
    }

    /// Stores `new` if the value is `current`; `Err` holds the value found otherwise.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::compare_exchange_at(self.ptr(), current, new)
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

/// The value, under its lock.
pub struct ValueGuard<'a, T: Pod> {
    _lock: LockGuard<'a>,
    ptr: *mut T,
    _t: PhantomData<&'a mut T>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held; the mapping outlives the guard's borrow of the Value.
        unsafe { &*self.ptr }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; holding the lock makes this the only writer that takes it.
        unsafe { &mut *self.ptr }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}
