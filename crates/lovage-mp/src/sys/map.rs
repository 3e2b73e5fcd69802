//! Shared mappings of a file descriptor (a memfd or a file in `/dev/shm`), and the list of
//! descriptors a new child inherits.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// One `MAP_SHARED` mapping of a whole object, with the descriptor that keeps it reopenable.
pub(crate) struct Mapping {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
    ino: u64,
    dev: u64,
}

// SAFETY: the mapping is plain shared memory; every access to it goes through atomics, futexes
// or the locks built on them, which is what makes sharing it between threads sound.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A new anonymous object of `len` zeroed bytes: a memfd, freed by the kernel when the last
    /// descriptor and mapping of it are gone, however its processes ended.
    pub(crate) fn memfd(name: &str, len: usize) -> io::Result<Mapping> {
        let cname = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: a valid C string; the returned descriptor is ours alone.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_len(&fd, len)?;
        Mapping::map(fd)
    }

    /// Creates the named object `path` (a file in `/dev/shm`) of `len` zeroed bytes; fails if it
    /// exists.
    pub(crate) fn create_path(path: &str, len: usize) -> io::Result<Mapping> {
        let fd = open(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
        if let Err(e) = set_len(&fd, len) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Mapping::map(fd)
    }

    /// Opens the existing object at `path` (a named segment or `/proc/<pid>/fd/<n>`).
    pub(crate) fn open_path(path: &str) -> io::Result<Mapping> {
        Mapping::map(open(path, libc::O_RDWR)?)
    }

    /// Identity of the object behind `path` without mapping it: (device, inode).
    pub(crate) fn identity(path: &str) -> io::Result<(u64, u64)> {
        let fd = open(path, libc::O_RDONLY)?;
        let st = fstat(&fd)?;
        Ok((st.st_dev, st.st_ino))
    }

    fn map(fd: OwnedFd) -> io::Result<Mapping> {
        let st = fstat(&fd)?;
        let len = usize::try_from(st.st_size).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared object cannot be empty",
            ));
        }
        // SAFETY: mapping a whole, sized, open descriptor shared; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        inherit_register(fd.as_raw_fd());
        Ok(Mapping {
            ino: st.st_ino,
            dev: st.st_dev,
            fd,
            ptr,
            len,
        })
    }

    /// The first byte (page aligned).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The descriptor number in this process.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// (device, inode): what a reopened descriptor must match.
    pub(crate) fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        inherit_unregister(self.fd.as_raw_fd());
        // SAFETY: ptr/len are exactly what mmap returned; every handle that borrows the memory
        // holds an `Arc<Mapping>`, so nobody uses it after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn open(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let cpath = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: a valid C string; the mode is used only with O_CREAT.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_len(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: an open descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; the descriptor is open.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// Descriptors of live objects, which every child started by `Process::spawn` inherits (they are
/// close-on-exec otherwise, so unrelated `Command`s do not leak them).
static INHERIT: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn inherit_register(fd: RawFd) {
    if let Ok(mut fds) = INHERIT.lock() {
        fds.push(fd);
    }
}

fn inherit_unregister(fd: RawFd) {
    if let Ok(mut fds) = INHERIT.lock() {
        if let Some(i) = fds.iter().position(|&f| f == fd) {
            fds.swap_remove(i);
        }
    }
}

/// Objects serialised since the last spawn. `task::s(queue)` takes its argument by value, so
/// the handle it describes may be dropped before `Process::spawn` runs; these references keep
/// each object open until the next child has inherited it. Bounded, for programs that
/// serialise handles and never spawn.
static KEPT: Mutex<Vec<Arc<Mapping>>> = Mutex::new(Vec::new());
const KEPT_MAX: usize = 4096;

/// Keeps `map` open until the next child starts.
pub(crate) fn keep_for_spawn(map: &Arc<Mapping>) {
    if let Ok(mut kept) = KEPT.lock() {
        if kept.len() >= KEPT_MAX {
            kept.drain(..KEPT_MAX / 2);
        }
        kept.push(Arc::clone(map));
    }
}

/// Takes the objects kept for the child about to start (drop them once it has).
pub(crate) fn take_kept() -> Vec<Arc<Mapping>> {
    KEPT.lock()
        .map(|mut k| std::mem::take(&mut *k))
        .unwrap_or_default()
}

/// The descriptors a child about to start should inherit.
pub(crate) fn inherited_fds() -> Vec<RawFd> {
    INHERIT.lock().map(|fds| fds.clone()).unwrap_or_default()
}

/// In a forked child before `exec`: lets `fds` survive the exec. Only `fcntl`, which is
/// async-signal-safe, as code between fork and exec must be.
pub(crate) fn keep_across_exec(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: clearing a descriptor flag; a stale number fails harmlessly with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
}
