//! [`SharedDict`]: a typed dict in the broker.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{decode, encode, Handle, SharedState};
use crate::{BrokerError, Result};

/// The entry types of a handle, as a function type so the handle is Send and Sync whatever
/// they are.
type Entry<K, V> = fn(K, V) -> (K, V);

/// How many times [`SharedDict::update_and_fetch`] tries before it reports contention.
const UPDATE_ATTEMPTS: u32 = 10_000;

/// A dict from `K` to `V` that lives in the broker, reached by name from any process (Python's
/// `Manager().dict()`). Every call is one round trip and one atomic step.
///
/// ```
/// # use lovage_broker::shared::Manager;
/// let m = Manager::connect("memory://dict-doc").unwrap();
/// let seen = m.dict::<String, u64>("seen").unwrap();
/// seen.insert(&"a".to_owned(), &1).unwrap();
/// seen.update_and_fetch(&"a".to_owned(), |n| Some(n.unwrap_or(0) + 1)).unwrap();
/// assert_eq!(seen.get(&"a".to_owned()).unwrap(), Some(2));
/// ```
pub struct SharedDict<K, V> {
    handle: Handle,
    // Owns no K or V and needs neither Send nor Sync: the values live in the broker.
    types: PhantomData<Entry<K, V>>,
}

impl<K, V> SharedDict<K, V> {
    pub(super) fn new(handle: Handle) -> Self {
        SharedDict {
            handle,
            types: PhantomData,
        }
    }

    /// Its name in the broker.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    fn store(&self) -> &dyn SharedState {
        self.handle.store()
    }

    /// How many keys it holds.
    pub fn len(&self) -> Result<u64> {
        self.store().dict_len(&self.handle.name)
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.store().dict_clear(&self.handle.name)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> SharedDict<K, V> {
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key, "shared dict key")?;
        self.store()
            .dict_get(&self.handle.name, &key)?
            .map(|v| decode(&v, "shared dict value"))
            .transpose()
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let key = encode(key, "shared dict key")?;
        Ok(self.store().dict_get(&self.handle.name, &key)?.is_some())
    }

    /// Sets `key` to `value` (Python's `d[key] = value`).
    pub fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.extend([(key, value)])
    }

    /// Sets every entry of `entries` in one step (Python's `d.update(...)`).
    pub fn extend<'a>(&self, entries: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let entries = entries
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    encode(k, "shared dict key")?,
                    encode(v, "shared dict value")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if entries.is_empty() {
            return Ok(());
        }
        self.store().dict_set(&self.handle.name, &entries)
    }

    /// Removes `key`, returning its value (Python's `d.pop(key, None)`).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key, "shared dict key")?;
        self.store()
            .dict_remove(&self.handle.name, &key)?
            .map(|v| decode(&v, "shared dict value"))
            .transpose()
    }

    /// Every entry, read in one step, in no particular order.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.store()
            .dict_entries(&self.handle.name)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    decode(&k, "shared dict key")?,
                    decode(&v, "shared dict value")?,
                ))
            })
            .collect()
    }

    /// Every key, read in one step.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.store()
            .dict_entries(&self.handle.name)?
            .into_iter()
            .map(|(k, _)| decode(&k, "shared dict key"))
            .collect()
    }

    /// Replaces the value of `key` with `f(current)` (`None`: absent; returning `None` removes
    /// it) atomically: when another process changed it in between, `f` runs again on the new
    /// value, so no update is lost. Returns the value it stored. `f` may run several times and
    /// should do nothing but compute.
    pub fn update_and_fetch(
        &self,
        key: &K,
        mut f: impl FnMut(Option<V>) -> Option<V>,
    ) -> Result<Option<V>> {
        let key_bytes = encode(key, "shared dict key")?;
        let store = self.store();
        let mut current = store.dict_get(&self.handle.name, &key_bytes)?;
        for attempt in 0..UPDATE_ATTEMPTS {
            let value = current
                .as_deref()
                .map(|v| decode(v, "shared dict value"))
                .transpose()?;
            let next = f(value);
            let next_bytes = next
                .as_ref()
                .map(|v| encode(v, "shared dict value"))
                .transpose()?;
            if store.dict_compare_and_set(
                &self.handle.name,
                &key_bytes,
                current.as_deref(),
                next_bytes.as_deref(),
            )? {
                return Ok(next);
            }
            // Lost a race: back off a little (more each time, capped) so many contenders
            // spread out instead of colliding again, then read what won.
            if attempt >= 8 {
                std::thread::sleep(Duration::from_micros(50 << (attempt - 8).min(6)));
            }
            current = store.dict_get(&self.handle.name, &key_bytes)?;
        }
        Err(BrokerError::BadRequest {
            what: "shared dict update",
            reason: format!(
                "{:?}: the key changed under {UPDATE_ATTEMPTS} attempts in a row; too many writers on one key",
                self.handle.name
            ),
        })
    }
}

impl<K, V> Clone for SharedDict<K, V> {
    fn clone(&self) -> Self {
        SharedDict::new(self.handle.clone())
    }
}

impl<K, V> fmt::Debug for SharedDict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.debug("SharedDict", f)
    }
}

impl<K, V> Serialize for SharedDict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for SharedDict<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Handle::deserialize(d).map(SharedDict::new)
    }
}
