//! Shared state that lives in the broker: a dict and a list that processes on any host reach
//! by name — what Python's `multiprocessing.Manager` gives through a proxy server, without the
//! server (the broker is already there).
//!
//! [`SharedState`] is the storage side, in bytes; every backend implements it and the
//! conformance suite checks each one. [`Manager`] hands out typed handles on top:
//! [`SharedDict`] and [`SharedList`], whose keys and values are MessagePack. A handle is
//! cheap to clone and can be passed to a task or a child process as an argument: it travels as
//! its broker's URL and its name and reconnects on the other side (a `memory://` broker cannot
//! leave its process, so such a handle refuses to be serialised).
//!
//! Each call is one atomic step in the broker; a read-modify-write that must not lose updates
//! goes through [`SharedDict::update_and_fetch`] (compare-and-set, retried), never a `get`
//! followed by an `insert` — the race Python's `d[k] += 1` on a proxy has.

mod dict;
mod list;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::{connect, Backend, BrokerError, Result};

pub use dict::SharedDict;
pub use list::SharedList;

/// The longest name a shared dict or list may have, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Every entry of one shared dict: (key, value) pairs.
pub type DictEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Storage of named dicts (byte keys to byte values) and lists (of byte values) in a broker.
/// Each method is one atomic step, safe from several threads and processes; a dict or list
/// that was never written reads as empty.
pub trait SharedState: Send + Sync {
    /// The value of `key` in `dict`.
    fn dict_get(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets every entry of `entries` in `dict`, all in one step.
    fn dict_set(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;

    /// Sets `key` to `new` (`None` removes it) only if its value is `expected` (`None`: the key
    /// is absent); true when it did.
    fn dict_compare_and_set(
        &self,
        dict: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;

    /// Sets each entry's key to its value only where the key is absent, in as few steps as
    /// the backend allows (each key on its own is one atomic step); for each entry, true when
    /// it was set. The default asks [`dict_compare_and_set`](Self::dict_compare_and_set) per key.
    fn dict_insert_absent(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<bool>> {
        entries
            .iter()
            .map(|(k, v)| self.dict_compare_and_set(dict, k, None, Some(v)))
            .collect()
    }

    /// Removes `key` from `dict` and returns the value it had.
    fn dict_remove(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// How many keys `dict` holds.
    fn dict_len(&self, dict: &str) -> Result<u64>;

    /// Whether `dict` holds no key: what a scope's join asks again and again, so a backend
    /// whose count walks the dict (SQLite's `count(*)`) answers it with one seek instead.
    fn dict_is_empty(&self, dict: &str) -> Result<bool> {
        Ok(self.dict_len(dict)? == 0)
    }

    /// Every entry of `dict`, read in one step (in no particular order).
    fn dict_entries(&self, dict: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Every entry of each of `dicts`, in order: one round trip where the backend allows (a
    /// worker reads the waiting lists of a batch of finished tasks at once).
    fn dict_entries_many(&self, dicts: &[String]) -> Result<Vec<DictEntries>> {
        dicts.iter().map(|d| self.dict_entries(d)).collect()
    }

    /// Removes every entry of `dict`.
    fn dict_clear(&self, dict: &str) -> Result<()>;

    /// Removes every entry of each of `dicts`: one round trip where the backend allows (a
    /// worker empties the waiting lists its batch of finished tasks consumed).
    fn dict_clear_many(&self, dicts: &[String]) -> Result<()> {
        dicts.iter().try_for_each(|d| self.dict_clear(d))
    }

    /// Appends `items` to `list` (at its front, in reverse order, when `front`: Redis' LPUSH);
    /// returns its new length.
    fn list_push(&self, list: &str, items: &[Vec<u8>], front: bool) -> Result<u64>;

    /// Removes and returns the last item of `list` (the first when `front`).
    fn list_pop(&self, list: &str, front: bool) -> Result<Option<Vec<u8>>>;

    /// The item at `index` (0 is the first), if there is one.
    fn list_get(&self, list: &str, index: u64) -> Result<Option<Vec<u8>>>;

    /// Replaces the item at `index`; false when the list has no such index.
    fn list_set(&self, list: &str, index: u64, value: &[u8]) -> Result<bool>;

    /// Up to `count` items from `start` on, read in one step.
    fn list_range(&self, list: &str, start: u64, count: u64) -> Result<Vec<Vec<u8>>>;

    /// How many items `list` holds.
    fn list_len(&self, list: &str) -> Result<u64>;

    /// Removes every item of `list`.
    fn list_clear(&self, list: &str) -> Result<()>;
}

/// Refuses a name no backend should store: empty, longer than [`MAX_NAME_LEN`], or holding a
/// control character.
pub fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("it is {} bytes long, above {MAX_NAME_LEN}", name.len())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("{name:?} holds the control character {c:?}")
    } else {
        return Ok(());
    };
    Err(BrokerError::BadRequest {
        what: "shared dict or list name",
        reason,
    })
}

/// Hands out shared dicts and lists that live in one broker.
#[derive(Clone)]
pub struct Manager {
    backend: Backend,
}

impl Manager {
    /// A manager over an open backend.
    pub fn new(backend: Backend) -> Manager {
        Manager { backend }
    }

    /// Opens the broker at `url` (see [`connect`](crate::connect())).
    pub fn connect(url: &str) -> Result<Manager> {
        connect(url).map(Manager::new)
    }

    /// The dict called `name`: created empty on first write, shared by every handle of that
    /// name in this broker.
    pub fn dict<K, V>(&self, name: &str) -> Result<SharedDict<K, V>> {
        check_name(name)?;
        Ok(SharedDict::new(self.handle(name)))
    }

    /// The list called `name` (dicts and lists have separate names).
    pub fn list<T>(&self, name: &str) -> Result<SharedList<T>> {
        check_name(name)?;
        Ok(SharedList::new(self.handle(name)))
    }

    /// The backend it stores in.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    fn handle(&self, name: &str) -> Handle {
        Handle {
            backend: self.backend.clone(),
            name: name.to_owned(),
        }
    }
}

/// What a typed handle holds: its broker and its name. It crosses into a task or a child
/// process as [`HandleWire`].
#[derive(Clone)]
struct Handle {
    backend: Backend,
    name: String,
}

impl Handle {
    fn store(&self) -> &dyn SharedState {
        self.backend.shared()
    }

    fn debug(&self, kind: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(kind)
            .field("broker", &self.backend.url())
            .field("name", &self.name)
            .finish()
    }
}

impl serde::Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        HandleWire::of(&self.backend, &self.name)?.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        HandleWire::deserialize(d)?.open()
    }
}

/// What a handle becomes when it crosses into a task or a child process.
#[derive(serde::Serialize, serde::Deserialize)]
struct HandleWire {
    broker: String,
    name: String,
}

impl HandleWire {
    fn of<E: serde::ser::Error>(backend: &Backend, name: &str) -> Result<HandleWire, E> {
        let broker = backend.url();
        if broker.starts_with("memory://") {
            return Err(E::custom(format!(
                "the shared object {name:?} lives in a memory:// broker, which cannot leave its process; \
                 use a sqlite:// or redis:// broker to share it with other processes"
            )));
        }
        if broker.contains(":***@") {
            return Err(E::custom(format!(
                "the shared object {name:?} lives in a broker whose URL holds a password, which a handle \
                 does not carry; open it with Manager::connect on the other side instead"
            )));
        }
        Ok(HandleWire {
            broker: broker.to_owned(),
            name: name.to_owned(),
        })
    }

    fn open<E: serde::de::Error>(self) -> Result<Handle, E> {
        check_name(&self.name).map_err(E::custom)?;
        Ok(Handle {
            backend: reopen(&self.broker).map_err(E::custom)?,
            name: self.name,
        })
    }
}

/// The backend at `url`, opened once per process: every handle that arrives with the same
/// URL shares one connection pool.
fn reopen(url: &str) -> Result<Backend> {
    static OPEN: OnceLock<Mutex<HashMap<String, Backend>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(b) = open.get(url) {
        return Ok(b.clone());
    }
    let b = connect(url)?;
    open.insert(url.to_owned(), b.clone());
    Ok(b)
}

/// Keys and values travel as MessagePack: compact, and a key encodes the same way every
/// time (a map whose order varies, like a `HashMap`, is not a good key).
fn encode<T: serde::Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    Ok(lovage_core::Codec::Msgpack.encode(value, what)?)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    Ok(lovage_core::Codec::Msgpack.decode(bytes, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("counts").is_ok());
        assert!(check_name("a/b:c d").is_ok());
        for bad in ["", "a\nb", "tab\there"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("shared dict or list name"), "{e}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(check_name(&long)
            .unwrap_err()
            .to_string()
            .contains("bytes long"));
    }

    #[test]
    fn a_memory_handle_refuses_to_leave_its_process() {
        let m = Manager::connect("memory://shared-handle-test").unwrap();
        let d = m.dict::<String, u64>("d").unwrap();
        let e = serde_json::to_string(&d).unwrap_err().to_string();
        assert!(e.contains("cannot leave its process"), "{e}");
    }
}
