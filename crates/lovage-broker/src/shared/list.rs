//! [`SharedList`]: a typed list in the broker.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{decode, encode, HandleWire, SharedState};
use crate::{Backend, BrokerError, Result};

/// A list of `T` that lives in the broker, reached by name from any process (Python's
/// `Manager().list()`). Pushes and pops at either end are atomic, so it also serves as a
/// simple work list shared between hosts.
///
/// ```
/// # use lovage_broker::shared::Manager;
/// let m = Manager::connect("memory://list-doc").unwrap();
/// let log = m.list::<String>("log").unwrap();
/// log.push(&"started".to_owned()).unwrap();
/// log.extend(&["a".to_owned(), "b".to_owned()]).unwrap();
/// assert_eq!(log.to_vec().unwrap(), ["started", "a", "b"]);
/// assert_eq!(log.pop_front().unwrap().as_deref(), Some("started"));
/// ```
pub struct SharedList<T> {
    backend: Backend,
    name: String,
    types: PhantomData<fn(T) -> T>,
}

impl<T> SharedList<T> {
    pub(super) fn new(backend: Backend, name: &str) -> Self {
        SharedList {
            backend,
            name: name.to_owned(),
            types: PhantomData,
        }
    }

    /// Its name in the broker.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn store(&self) -> &dyn SharedState {
        self.backend.shared()
    }

    /// How many items it holds.
    pub fn len(&self) -> Result<u64> {
        self.store().list_len(&self.name)
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.store().list_clear(&self.name)
    }
}

impl<T: Serialize + DeserializeOwned> SharedList<T> {
    /// Appends an item (Python's `append`); returns the new length.
    pub fn push(&self, item: &T) -> Result<u64> {
        self.extend(std::slice::from_ref(item))
    }

    /// Appends items in one step; returns the new length.
    pub fn extend(&self, items: &[T]) -> Result<u64> {
        let items = items
            .iter()
            .map(|i| encode(i, "shared list item"))
            .collect::<Result<Vec<_>>>()?;
        self.store().list_push(&self.name, &items, false)
    }

    /// Puts an item first; returns the new length.
    pub fn push_front(&self, item: &T) -> Result<u64> {
        let item = encode(item, "shared list item")?;
        self.store().list_push(&self.name, &[item], true)
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>> {
        self.decode_opt(self.store().list_pop(&self.name, false)?)
    }

    /// Removes and returns the first item (a FIFO when pushed with [`push`](Self::push)).
    pub fn pop_front(&self) -> Result<Option<T>> {
        self.decode_opt(self.store().list_pop(&self.name, true)?)
    }

    /// The item at `index`.
    pub fn get(&self, index: u64) -> Result<Option<T>> {
        self.decode_opt(self.store().list_get(&self.name, index)?)
    }

    /// Replaces the item at `index`; an index past the end is an error that says so.
    pub fn set(&self, index: u64, item: &T) -> Result<()> {
        let item = encode(item, "shared list item")?;
        if self.store().list_set(&self.name, index, &item)? {
            return Ok(());
        }
        Err(BrokerError::BadRequest {
            what: "shared list index",
            reason: format!(
                "{:?} has no index {index} (it holds {} items)",
                self.name,
                self.len()?
            ),
        })
    }

    /// The items in `range` that exist, read in one step.
    pub fn range(&self, range: Range<u64>) -> Result<Vec<T>> {
        let count = range.end.saturating_sub(range.start);
        if count == 0 {
            return Ok(Vec::new());
        }
        self.store()
            .list_range(&self.name, range.start, count)?
            .iter()
            .map(|i| decode(i, "shared list item"))
            .collect()
    }

    /// Every item, read in one step.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.range(0..u64::MAX)
    }

    fn decode_opt(&self, item: Option<Vec<u8>>) -> Result<Option<T>> {
        item.map(|i| decode(&i, "shared list item")).transpose()
    }
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList::new(self.backend.clone(), &self.name)
    }
}

impl<T> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedList")
            .field("broker", &self.backend.url())
            .field("name", &self.name)
            .finish()
    }
}

impl<T> Serialize for SharedList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        HandleWire::of(&self.backend, &self.name)?.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (backend, name) = HandleWire::deserialize(d)?.open()?;
        Ok(SharedList::new(backend, &name))
    }
}
