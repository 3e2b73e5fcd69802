//! `Pipe`: a pair of connected ends over a Unix socket pair (Python's `multiprocessing.Pipe`),
//! typed messages or raw bytes.
//!
//! A message is a 4-byte length and its bytes, written with one `write` from a reused buffer.
//! The reader keeps a buffer too and takes whole messages out of one `read` where it can; it
//! polls briefly before blocking, because on a round trip the reply usually comes within a
//! few microseconds and sleeping and being woken costs more than that.

use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::object::Descriptor;
use crate::sys::map::{keep_fd_for_spawn, HoldsFd};

/// Messages larger than this are refused (a corrupt length must not allocate gigabytes).
pub const MAX_PIPE_MESSAGE: usize = 1 << 30;

/// Polls for this long before a blocking read.
const SPIN: Duration = Duration::from_micros(50);

/// An open socket end.
pub(crate) struct Socket {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

impl Socket {
    fn new(fd: OwnedFd) -> io::Result<Socket> {
        // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd.as_raw_fd(), &mut st) < 0 {
                return Err(io::Error::last_os_error());
            }
            st
        };
        Ok(Socket {
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl HoldsFd for Socket {
    fn raw_fd(&self) -> RawFd {
        self.raw()
    }
}

struct Inner {
    sock: Arc<Socket>,
    read: Mutex<ReadBuf>,
    write: Mutex<Vec<u8>>,
    readable: bool,
    writable: bool,
}

#[derive(Default)]
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

/// One end of a [`Pipe`]. Clones share the end (and its buffers); pass it to a child as a task
/// argument (the child inherits the socket).
pub struct Connection<T> {
    inner: Arc<Inner>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            inner: Arc::clone(&self.inner),
            _t: PhantomData,
        }
    }
}

/// Makes connected pipe ends.
pub struct Pipe;

impl Pipe {
    /// Two connected ends; both send and receive when `duplex`, else the first only receives
    /// and the second only sends (Python's `Pipe(duplex=False)` order).
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T>(duplex: bool) -> Result<(Connection<T>, Connection<T>)> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid out-array of two ints.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(Error::io(
                "creating a socket pair",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let a = Socket::new(a).map_err(|e| Error::io("inspecting a socket", e))?;
        let b = Socket::new(b).map_err(|e| Error::io("inspecting a socket", e))?;
        Ok((
            Connection::from_socket(Arc::new(a), true, duplex),
            Connection::from_socket(Arc::new(b), duplex, true),
        ))
    }
}

impl<T> Connection<T> {
    fn from_socket(sock: Arc<Socket>, readable: bool, writable: bool) -> Self {
        Connection {
            inner: Arc::new(Inner {
                sock,
                read: Mutex::new(ReadBuf::default()),
                write: Mutex::new(Vec::new()),
                readable,
                writable,
            }),
            _t: PhantomData,
        }
    }

    /// Sends raw bytes as one message.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_with(|buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn send_with(&self, fill: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        if !self.inner.writable {
            return Err(Error::Invalid(
                "this end of a one-way pipe only receives".into(),
            ));
        }
        let mut buf = self
            .inner
            .write
            .lock()
            .map_err(|_| Error::Invalid("pipe write buffer poisoned".into()))?;
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        fill(&mut buf)?;
        let len = buf.len() - 4;
        if len > MAX_PIPE_MESSAGE {
            return Err(Error::MessageTooLarge {
                size: len,
                max: MAX_PIPE_MESSAGE,
            });
        }
        buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        let mut out = FdWriter(self.inner.sock.raw());
        out.write_all(&buf).map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Error::Closed,
            _ => Error::io("sending on a pipe", e),
        })?;
        // A large buffer is not kept: one big message must not pin its memory forever.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        Ok(())
    }

    /// Receives one message's raw bytes into `out` (replacing its contents).
    pub fn recv_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        self.recv_with(None, |bytes| {
            out.clear();
            out.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn recv_with<R>(
        &self,
        until: Option<Instant>,
        take: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        if !self.inner.readable {
            return Err(Error::Invalid(
                "this end of a one-way pipe only sends".into(),
            ));
        }
        let mut rb = self
            .inner
            .read
            .lock()
            .map_err(|_| Error::Invalid("pipe read buffer poisoned".into()))?;
        let fd = self.inner.sock.raw();
        loop {
            let avail = rb.buf.len() - rb.start;
            if avail >= 4 {
                let s = rb.start;
                let len =
                    u32::from_le_bytes([rb.buf[s], rb.buf[s + 1], rb.buf[s + 2], rb.buf[s + 3]])
                        as usize;
                if len > MAX_PIPE_MESSAGE {
                    return Err(Error::NotLovage(format!(
                        "a pipe message of {len} bytes: not a lovage pipe, or corrupt"
                    )));
                }
                if avail >= 4 + len {
                    rb.start += 4 + len;
                    let r = take(&rb.buf[s + 4..s + 4 + len]);
                    if rb.start == rb.buf.len() {
                        rb.start = 0;
                        rb.buf.clear();
                    }
                    return r;
                }
                // Make room for the whole message in one read where possible.
                let need = 4 + len;
                let rb = &mut *rb;
                if rb.start > 0 {
                    let st = rb.start;
                    rb.buf.drain(..st);
                    rb.start = 0;
                }
                let have = rb.buf.len();
                rb.buf.reserve(need.saturating_sub(have));
            } else if rb.start > 0 {
                let st = rb.start;
                rb.buf.drain(..st);
                rb.start = 0;
            }
            if rb.buf.capacity() - rb.buf.len() < 64 * 1024 {
                rb.buf.reserve(64 * 1024);
            }
            read_more(fd, &mut rb.buf, until)?;
        }
    }
}

/// Appends what `fd` has to `buf`: polls a little, then blocks (until `until`).
fn read_more(fd: RawFd, buf: &mut Vec<u8>, until: Option<Instant>) -> Result<()> {
    let spin_end = Instant::now() + SPIN;
    loop {
        let spare = buf.capacity() - buf.len();
        let spinning = Instant::now() < spin_end;
        let flags = if spinning || until.is_some() {
            libc::MSG_DONTWAIT
        } else {
            0
        };
        // SAFETY: writing into the vector's spare capacity, `spare` bytes from its end.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().add(buf.len()).cast(), spare, flags) };
        if n > 0 {
            // SAFETY: recv initialised n bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(());
        }
        if n == 0 {
            return Err(Error::Closed);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                if spinning {
                    std::hint::spin_loop();
                    continue;
                }
                // With a deadline: wait for readability at most until then.
                if let Some(d) = until {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout(Duration::ZERO));
                    }
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let ms = (d - now).as_millis().clamp(1, i32::MAX as u128) as i32;
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, ms) };
                }
            }
            _ => return Err(Error::io("receiving on a pipe", e)),
        }
    }
}

struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: a valid slice; MSG_NOSIGNAL turns a closed peer into EPIPE, not SIGPIPE.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `v` (MessagePack).
    pub fn send(&self, v: &T) -> Result<()> {
        self.send_with(|buf| {
            rmp_serde::encode::write_named(buf, v).map_err(|e| {
                Error::Codec(lovage_core::CodecError::Encode {
                    codec: lovage_core::Codec::Msgpack,
                    what: "a pipe message",
                    reason: e.to_string(),
                })
            })
        })
    }

    /// Receives the next message, waiting for it; [`Error::Closed`] once the other end is gone.
    pub fn recv(&self) -> Result<T> {
        self.recv_with(None, decode)
    }

    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_with(crate::lock::deadline(timeout), decode)
            .map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                e => e,
            })
    }

    /// True if a message (or part of one) can be read now or within `timeout`.
    pub fn poll(&self, timeout: Duration) -> bool {
        if let Ok(rb) = self.inner.read.lock() {
            if rb.buf.len() > rb.start {
                return true;
            }
        }
        let mut pfd = libc::pollfd {
            fd: self.inner.sock.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        Error::Codec(lovage_core::CodecError::Decode {
            codec: lovage_core::Codec::Msgpack,
            what: "a pipe message",
            reason: e.to_string(),
        })
    })
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.inner.sock.raw())
            .field("readable", &self.inner.readable)
            .field("writable", &self.inner.writable)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct PipeDescriptor {
    end: Descriptor,
    readable: bool,
    writable: bool,
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        keep_fd_for_spawn(Arc::clone(&self.inner.sock) as Arc<dyn HoldsFd>);
        PipeDescriptor {
            end: Descriptor {
                kind: "Connection".into(),
                ty: std::any::type_name::<T>().into(),
                pid: std::process::id(),
                fd: self.inner.sock.raw(),
                dev: self.inner.sock.dev,
                ino: self.inner.sock.ino,
            },
            readable: self.inner.readable,
            writable: self.inner.writable,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let p = PipeDescriptor::deserialize(d)?;
        let expected = std::any::type_name::<T>();
        if p.end.kind != "Connection" || p.end.ty != expected {
            return Err(serde::de::Error::custom(Error::WrongType {
                expected: format!("Connection<{expected}>"),
                found: format!("{}<{}>", p.end.kind, p.end.ty),
            }));
        }
        // A socket cannot be reopened through /proc: it must have been inherited, at the same
        // number, and be the same socket.
        let same = std::fs::metadata(format!("/proc/self/fd/{}", p.end.fd))
            .ok()
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
        if p.end.fd < 0 || same != Some((p.end.dev, p.end.ino)) {
            return Err(serde::de::Error::custom(Error::NotFound {
                kind: format!("Connection<{expected}>"),
                fd: p.end.fd,
                pid: p.end.pid,
            }));
        }
        // SAFETY: dup of a descriptor checked to be open and the expected socket.
        let fd = unsafe { libc::fcntl(p.end.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(serde::de::Error::custom(Error::io(
                "duplicating an inherited pipe end",
                io::Error::last_os_error(),
            )));
        }
        // SAFETY: a fresh descriptor we own.
        let sock = Socket::new(unsafe { OwnedFd::from_raw_fd(fd) })
            .map_err(|e| serde::de::Error::custom(Error::io("inspecting a pipe end", e)))?;
        Ok(Connection::from_socket(
            Arc::new(sock),
            p.readable,
            p.writable,
        ))
    }
}
