//! `Queue<T>` and `JoinableQueue<T>`: typed messages between any number of producers and
//! consumers in related processes, through a ring in shared memory (see `ring.rs` for why a
//! killed producer never leaves a torn message).

use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lock::deadline;
use crate::object::{handle_serde, ElemType, Kind, Object};
use crate::ring::Ring;

/// A ring of this many bytes unless asked otherwise: 1 MiB messages fit, and pages the queue
/// never reaches are never allocated.
pub const DEFAULT_CAPACITY: usize = 8 << 20;

thread_local! {
    /// Reused encode and decode buffers: a put or get allocates nothing once warm.
    static BUFS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A FIFO queue of `T` across processes (Python's `multiprocessing.Queue`), MessagePack-encoded
/// (lovage's codec; no pickling). Messages from one producer arrive in the order it put them.
///
/// A queue holds at most `capacity` bytes of messages (a message larger than that is refused
/// with [`Error::MessageTooLarge`]) and, if bounded, at most `maxsize` messages; `put` waits
/// for room. [`close`](Queue::close) ends it for everyone: puts fail, gets drain what is left,
/// then fail with [`Error::Closed`].
pub struct Queue<T> {
    ring: Ring,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            _t: PhantomData,
        }
    }
}

handle_serde!(Queue<T: QueueItem>, Kind::Queue, ElemType::of::<T>());

/// What a queue carries: any serde type.
pub trait QueueItem: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> QueueItem for T {}

fn encode<T: Serialize>(v: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    rmp_serde::encode::write_named(buf, v).map_err(|e| {
        Error::Codec(lovage_core::CodecError::Encode {
            codec: lovage_core::Codec::Msgpack,
            what: "a queue message",
            reason: e.to_string(),
        })
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        Error::Codec(lovage_core::CodecError::Decode {
            codec: lovage_core::Codec::Msgpack,
            what: "a queue message",
            reason: e.to_string(),
        })
    })
}

fn timed<R>(r: Result<R>, timeout: Duration) -> Result<R> {
    r.map_err(|e| match e {
        Error::Timeout(_) => Error::Timeout(timeout),
        e => e,
    })
}

impl<T: QueueItem> Queue<T> {
    /// A queue with no limit on the number of messages, in a ring of [`DEFAULT_CAPACITY`] bytes.
    pub fn new() -> Result<Queue<T>> {
        Queue::with_capacity(DEFAULT_CAPACITY, 0)
    }

    /// A queue of at most `maxsize` messages (Python's `Queue(maxsize)`).
    pub fn bounded(maxsize: usize) -> Result<Queue<T>> {
        if maxsize == 0 {
            return Err(Error::Invalid("a bounded queue of 0 messages".into()));
        }
        Queue::with_capacity(DEFAULT_CAPACITY, maxsize)
    }

    /// A queue of `capacity` bytes of messages and at most `maxsize` messages (0: no limit).
    pub fn with_capacity(capacity: usize, maxsize: usize) -> Result<Queue<T>> {
        Ok(Queue {
            ring: Ring::create(capacity, maxsize as u64, ElemType::of::<T>())?,
            _t: PhantomData,
        })
    }

    fn from_object(obj: Object) -> Result<Queue<T>> {
        Ok(Queue {
            ring: Ring::from_object(obj)?,
            _t: PhantomData,
        })
    }

    fn object(&self) -> &Object {
        self.ring.object()
    }

    fn put_until(&self, v: &T, until: Option<Instant>) -> Result<()> {
        BUFS.with(|b| {
            let mut b = b.borrow_mut();
            encode(v, &mut b.0)?;
            self.ring.put(&b.0, until)
        })
    }

    fn get_until(&self, until: Option<Instant>) -> Result<T> {
        BUFS.with(|b| {
            let mut b = b.borrow_mut();
            self.ring.get(&mut b.1, until)?;
            decode(&b.1)
        })
    }

    /// Appends `v`, waiting for room.
    pub fn put(&self, v: &T) -> Result<()> {
        self.put_until(v, None)
    }

    /// Appends `v`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, v: &T, timeout: Duration) -> Result<()> {
        timed(self.put_until(v, deadline(timeout)), timeout)
    }

    /// Takes the next message, waiting for one.
    pub fn get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Takes the next message, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        timed(self.get_until(deadline(timeout)), timeout)
    }

    /// Takes the next message if one is there now.
    pub fn try_get(&self) -> Result<Option<T>> {
        match self.get_until(Some(Instant::now())) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Appends raw bytes (a consumer must take them with [`get_bytes`](Queue::get_bytes)).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.ring.put(bytes, None)
    }

    /// Takes the next message as raw bytes into `out`, replacing its contents.
    pub fn get_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        self.ring.get(out, None)
    }

    /// Ends the queue for every process: puts fail; gets drain, then fail with `Closed`.
    pub fn close(&self) {
        self.ring.close()
    }

    /// True once [`close`](Queue::close)d.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// Messages queued now (a snapshot: others may be putting and getting).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest encoded message this queue takes.
    pub fn max_message(&self) -> usize {
        self.ring.max_message()
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("max_message", &self.ring.max_message())
            .finish()
    }
}

/// A [`Queue`] whose producers can wait until every message has been handled (Python's
/// `JoinableQueue`): consumers call [`task_done`](JoinableQueue::task_done) per message,
/// [`join`](JoinableQueue::join) waits for that. Derefs to the queue for put and get.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

handle_serde!(JoinableQueue<T: QueueItem>, Kind::Queue, ElemType::of::<T>());

impl<T: QueueItem> JoinableQueue<T> {
    /// A joinable queue with no limit on the number of messages.
    pub fn new() -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// A joinable queue of `capacity` bytes and at most `maxsize` messages (0: no limit).
    pub fn with_capacity(capacity: usize, maxsize: usize) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::with_capacity(capacity, maxsize)?,
        })
    }

    fn from_object(obj: Object) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::from_object(obj)?,
        })
    }

    fn object(&self) -> &Object {
        self.queue.object()
    }

    /// One message taken earlier is handled. More calls than messages put is an error.
    pub fn task_done(&self) -> Result<()> {
        self.queue.ring.task_done()
    }

    /// Waits until every message put has had its `task_done`.
    pub fn join(&self) -> Result<()> {
        self.queue.ring.join(None)
    }

    /// Waits at most `timeout` for every message put to be handled.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        timed(self.queue.ring.join(deadline(timeout)), timeout)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}
