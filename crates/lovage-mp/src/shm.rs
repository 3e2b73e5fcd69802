//! `SharedMemory`: raw bytes shared by processes, anonymous (a memfd) or named (`/dev/shm`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::object::{reopen, Descriptor};
use crate::sys::map::Mapping;

/// Raw shared bytes (Python's `multiprocessing.shared_memory.SharedMemory`).
///
/// **Anonymous** ([`SharedMemory::anonymous`]) is a memfd: children get it as a task argument,
/// and the kernel frees it when the last process holding it exits, however it exits — nothing
/// leaks when everything is killed -9. **Named** ([`SharedMemory::create`]) is a file in
/// `/dev/shm` that unrelated processes [`open`](SharedMemory::open) by name; like any file it
/// outlives its processes until [`unlink`](SharedMemory::unlink)ed (the creator's handle unlinks
/// it when dropped, not when killed). Nothing here unlinks a segment others still use.
///
/// The bytes are shared with other processes, so this hands out no `&[u8]`: use
/// [`read_at`](SharedMemory::read_at) / [`write_at`](SharedMemory::write_at), or
/// [`as_ptr`](SharedMemory::as_ptr) with your own synchronisation.
#[derive(Clone)]
pub struct SharedMemory {
    map: Arc<Mapping>,
    name: Option<String>,
    _owner: Option<Arc<Unlinker>>,
}

/// Unlinks a named segment when the creator's last handle drops.
struct Unlinker(String);

impl Drop for Unlinker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shm_path(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains('/') || bare == "." || bare == ".." {
        return Err(Error::Invalid(format!(
            "shared memory name {name:?}: must be 1 to 250 characters without '/'"
        )));
    }
    Ok(format!("/dev/shm/{bare}"))
}

impl SharedMemory {
    /// `len` zeroed bytes, anonymous.
    pub fn anonymous(len: usize) -> Result<SharedMemory> {
        if len == 0 {
            return Err(Error::Invalid("shared memory of 0 bytes".into()));
        }
        let map = Mapping::memfd("lovage-mp-SharedMemory", len)
            .map_err(|e| Error::io(format!("creating {len} bytes of shared memory"), e))?;
        Ok(SharedMemory {
            map: Arc::new(map),
            name: None,
            _owner: None,
        })
    }

    /// Creates the named segment `name` of `len` zeroed bytes; fails if it exists. Dropping the
    /// last handle of the creating process unlinks it.
    pub fn create(name: &str, len: usize) -> Result<SharedMemory> {
        if len == 0 {
            return Err(Error::Invalid("shared memory of 0 bytes".into()));
        }
        let path = shm_path(name)?;
        let map = Mapping::create_path(&path, len)
            .map_err(|e| Error::io(format!("creating shared memory {path}"), e))?;
        Ok(SharedMemory {
            map: Arc::new(map),
            name: Some(name.to_owned()),
            _owner: Some(Arc::new(Unlinker(path))),
        })
    }

    /// Opens the named segment `name`, made by any process.
    pub fn open(name: &str) -> Result<SharedMemory> {
        let path = shm_path(name)?;
        let map = Mapping::open_path(&path)
            .map_err(|e| Error::io(format!("opening shared memory {path}"), e))?;
        Ok(SharedMemory {
            map: Arc::new(map),
            name: Some(name.to_owned()),
            _owner: None,
        })
    }

    /// Removes the name now (the memory lives on while mapped); `Ok` if it was already gone.
    pub fn unlink(&self) -> Result<()> {
        let Some(name) = &self.name else {
            return Ok(());
        };
        let path = shm_path(name)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("unlinking {path}"), e))
            }
            _ => Ok(()),
        }
    }

    /// The name, for a named segment.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: a segment has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first byte, for code that synchronises access itself.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr()
    }

    fn range(&self, offset: usize, n: usize) -> Result<()> {
        if offset.checked_add(n).is_none_or(|end| end > self.len()) {
            return Err(Error::Invalid(format!(
                "{n} bytes at offset {offset} are outside shared memory of {} bytes",
                self.len()
            )));
        }
        Ok(())
    }

    /// Copies bytes at `offset` into `buf`.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.range(offset, buf.len())?;
        // SAFETY: in range of a live mapping; a byte copy tolerates concurrent writers (it may
        // see a mix of old and new bytes, which is what unsynchronised shared bytes mean).
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.ptr().add(offset), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `bytes` to `offset`.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.range(offset, bytes.len())?;
        // SAFETY: as in read_at.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.ptr().add(offset), bytes.len())
        };
        Ok(())
    }
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
enum ShmDescriptor {
    Anonymous(Descriptor),
    Named(String),
}

impl Serialize for SharedMemory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.name {
            Some(n) => ShmDescriptor::Named(n.clone()),
            None => {
                crate::sys::map::keep_for_spawn(&self.map);
                let (dev, ino) = self.map.id();
                ShmDescriptor::Anonymous(Descriptor {
                    kind: "SharedMemory".into(),
                    ty: String::new(),
                    pid: std::process::id(),
                    fd: self.map.fd(),
                    dev,
                    ino,
                })
            }
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match ShmDescriptor::deserialize(d)? {
            ShmDescriptor::Named(n) => SharedMemory::open(&n),
            ShmDescriptor::Anonymous(desc) => {
                if desc.kind != "SharedMemory" {
                    Err(Error::WrongType {
                        expected: "SharedMemory".into(),
                        found: desc.kind.clone(),
                    })
                } else {
                    reopen(&desc).map(|map| SharedMemory {
                        map: Arc::new(map),
                        name: None,
                        _owner: None,
                    })
                }
            }
        }
        .map_err(serde::de::Error::custom)
    }
}
