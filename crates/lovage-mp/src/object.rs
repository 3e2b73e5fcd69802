//! A shared object: a header naming its kind and element type, then its state. Every handle
//! holds one; its descriptor is what crosses into a child as a task argument.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys::map::Mapping;

const MAGIC: u64 = u64::from_le_bytes(*b"LOVAGEMP");

/// Bytes before an object's state: the header, padded to a cache line.
pub(crate) const HEADER: usize = 64;

/// What a header says about its object, written once by the creator before anyone can see it.
#[repr(C)]
struct Header {
    magic: u64,
    kind: u32,
    elem_size: u32,
    type_hash: u64,
    len: u64,
}

/// The kinds of shared object (stored in headers and descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    SharedMemory = 1,
    Value = 2,
    Array = 3,
    Lock = 4,
    RLock = 5,
    Queue = 6,
    Semaphore = 7,
    Event = 8,
    Condition = 9,
    Barrier = 10,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SharedMemory => "SharedMemory",
            Kind::Value => "Value",
            Kind::Array => "Array",
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Queue => "Queue",
            Kind::Semaphore => "Semaphore",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Barrier => "Barrier",
        }
    }

    fn from_u32(k: u32) -> Option<Kind> {
        [
            Kind::SharedMemory,
            Kind::Value,
            Kind::Array,
            Kind::Lock,
            Kind::RLock,
            Kind::Queue,
            Kind::Semaphore,
            Kind::Event,
            Kind::Condition,
            Kind::Barrier,
        ]
        .into_iter()
        .find(|x| *x as u32 == k)
    }
}

/// The element type of an object: its name (for errors) and a hash that must match.
#[derive(Debug, Clone)]
pub(crate) struct ElemType {
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    hash: u64,
}

impl ElemType {
    /// The element type `T`.
    pub(crate) fn of<T>() -> ElemType {
        let name = std::any::type_name::<T>();
        let size = std::mem::size_of::<T>();
        // FNV-1a over the name, size and alignment: children run the same executable, so the
        // same type has the same name there.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = name
            .bytes()
            .chain(size.to_le_bytes())
            .chain(std::mem::align_of::<T>().to_le_bytes());
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        ElemType {
            name,
            size,
            hash: h,
        }
    }

    /// No element type (locks, events, raw memory).
    pub(crate) fn none() -> ElemType {
        ElemType {
            name: "",
            size: 0,
            hash: 0,
        }
    }
}

fn display(kind: Kind, ty: &str) -> String {
    if ty.is_empty() {
        kind.name().to_owned()
    } else {
        format!("{}<{ty}>", kind.name())
    }
}

/// A shared object mapped in this process. Clones share the mapping.
#[derive(Clone)]
pub(crate) struct Object {
    map: Arc<Mapping>,
    kind: Kind,
    ty: ElemType,
    len: u64,
}

impl Object {
    /// Creates an object of `kind` with `state` bytes after the header and `len` elements.
    pub(crate) fn create(kind: Kind, ty: ElemType, len: u64, state: usize) -> Result<Object> {
        let total = HEADER
            .checked_add(state)
            .ok_or_else(|| Error::Invalid(format!("a {} of {state} bytes", kind.name())))?;
        let map = Mapping::memfd(&format!("lovage-mp-{}", kind.name()), total)
            .map_err(|e| Error::io(format!("creating a {} of {total} bytes", kind.name()), e))?;
        // SAFETY: a fresh, zeroed, page-aligned mapping of at least HEADER bytes that no other
        // process can see yet.
        unsafe {
            map.ptr().cast::<Header>().write(Header {
                magic: MAGIC,
                kind: kind as u32,
                elem_size: ty.size as u32,
                type_hash: ty.hash,
                len,
            });
        }
        Ok(Object {
            map: Arc::new(map),
            kind,
            ty,
            len,
        })
    }

    /// Reopens the object a descriptor names, checking it is a `kind` of `ty`.
    pub(crate) fn open(d: &Descriptor, kind: Kind, ty: ElemType) -> Result<Object> {
        let expected = display(kind, ty.name);
        if d.kind != kind.name() || d.ty != ty.name {
            return Err(Error::WrongType {
                expected,
                found: display_str(&d.kind, &d.ty),
            });
        }
        let map = reopen(d)?;
        if map.len() < HEADER {
            return Err(Error::NotLovage(format!(
                "{} bytes, shorter than a header",
                map.len()
            )));
        }
        // SAFETY: the mapping has at least HEADER bytes and is page aligned; the creator wrote
        // the header before the descriptor existed and never writes it again.
        let h = unsafe { map.ptr().cast::<Header>().read() };
        if h.magic != MAGIC {
            return Err(Error::NotLovage(format!(
                "fd {} of process {} holds no lovage header",
                d.fd, d.pid
            )));
        }
        let found_kind = Kind::from_u32(h.kind)
            .ok_or_else(|| Error::NotLovage(format!("unknown object kind {}", h.kind)))?;
        if found_kind != kind || h.type_hash != ty.hash || h.elem_size as usize != ty.size {
            return Err(Error::WrongType {
                expected,
                found: display(found_kind, &d.ty),
            });
        }
        Ok(Object {
            map: Arc::new(map),
            kind,
            ty,
            len: h.len,
        })
    }

    /// The descriptor another process reopens this object by.
    pub(crate) fn descriptor(&self) -> Descriptor {
        crate::sys::map::keep_for_spawn(&self.map);
        let (dev, ino) = self.map.id();
        Descriptor {
            kind: self.kind.name().to_owned(),
            ty: self.ty.name.to_owned(),
            pid: std::process::id(),
            fd: self.map.fd(),
            dev,
            ino,
        }
    }

    /// The state, `HEADER` bytes in (64-byte aligned).
    pub(crate) fn state(&self) -> *mut u8 {
        // SAFETY: every object is created with at least HEADER bytes.
        unsafe { self.map.ptr().add(HEADER) }
    }

    /// Bytes of state after the header.
    pub(crate) fn state_len(&self) -> usize {
        self.map.len() - HEADER
    }

    /// The element count the creator gave.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

fn display_str(kind: &str, ty: &str) -> String {
    if ty.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}<{ty}>")
    }
}

/// Finds the descriptor's object: inherited at the same number (a child of its writer), else
/// through its writer's `/proc/<pid>/fd` while that process lives. Either must be the same
/// inode the writer had, so a reused number is never mistaken for the object.
pub(crate) fn reopen(d: &Descriptor) -> Result<Mapping> {
    let paths = [
        format!("/proc/self/fd/{}", d.fd),
        format!("/proc/{}/fd/{}", d.pid, d.fd),
    ];
    for path in &paths {
        if d.fd < 0 {
            break;
        }
        if Mapping::identity(path).ok() == Some((d.dev, d.ino)) {
            return Mapping::open_path(path)
                .map_err(|e| Error::io(format!("reopening {}", display_str(&d.kind, &d.ty)), e));
        }
    }
    Err(Error::NotFound {
        kind: display_str(&d.kind, &d.ty),
        fd: d.fd,
        pid: d.pid,
    })
}

/// How a shared object crosses into another process: what it is and where its memory is.
/// Handles serialise to this and deserialise by reopening it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    /// `lovage_mp` marks a descriptor, so an unrelated map is refused by name.
    pub(crate) kind: String,
    pub(crate) ty: String,
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// Serde for a handle type holding an [`Object`]: serialises the descriptor, deserialises by
/// reopening it (an error names what did not match).
macro_rules! handle_serde {
    ($ty:ident $(<$g:ident : $bound:path>)?, $kind:expr, $elem:expr) => {
        impl$(<$g: $bound>)? serde::Serialize for $ty$(<$g>)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.object().descriptor().serialize(s)
            }
        }
        impl<'de $(, $g: $bound)?> serde::Deserialize<'de> for $ty$(<$g>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let desc = $crate::object::Descriptor::deserialize(d)?;
                let obj = $crate::object::Object::open(&desc, $kind, $elem)
                    .map_err(serde::de::Error::custom)?;
                Self::from_object(obj).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use handle_serde;
