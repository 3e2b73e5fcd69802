//! `lovage::mp`: processes and shared state across them — Python's `multiprocessing` beyond
//! pools, in Rust. Linux only.
//!
//! A [`Process`] runs a registered task in a child: the current executable started again
//! (call [`child_main`] — or `lovage::init()` — first in `main`). Shared objects ([`Value`],
//! [`Array`], [`SharedMemory`], [`Lock`], [`RLock`], …) are task arguments like any other: they
//! serialise to a descriptor (an inherited memfd, checked by inode, or a name) that the child
//! reopens, and opening one as the wrong kind or element type is an error, not undefined
//! behaviour.
//!
//! Anonymous objects are memfds: the kernel frees them when the last process holding them
//! ends, so killing every process with -9 leaks nothing. Locks are robust: a lock whose holder
//! dies goes to the next acquirer with [`OwnerDied`].

mod array;
mod error;
mod lock;
mod object;
mod pod;
mod process;
mod shm;
mod sys;
mod value;

pub use array::{Array, ArrayGuard, Chunk};
pub use bytemuck::{Pod, Zeroable};
pub use error::{Error, Result};
pub use lock::{Lock, LockGuard, LockResult, OwnerDied, RLock, RLockGuard};
pub use pod::AtomicInt;
pub use process::{
    child_main, ExitStatus, Process, EXIT_BAD_REQUEST, EXIT_PANIC, EXIT_TASK_FAILED,
};
pub use shm::SharedMemory;
pub use value::{Value, ValueGuard};
