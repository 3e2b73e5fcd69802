//! [`SharedList`]: a typed list in the broker.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{decode, encode, Handle, SharedState};
use crate::{BrokerError, Result};

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
    handle: Handle,
    types: PhantomData<fn(T) -> T>,
}

impl<T> SharedList<T> {
    pub(super) fn new(handle: Handle) -> Self {
        SharedList {
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

    /// How many items it holds.
    pub fn len(&self) -> Result<u64> {
        self.store().list_len(&self.handle.name)
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.store().list_clear(&self.handle.name)
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
        self.store().list_push(&self.handle.name, &items, false)
    }

    /// Puts an item first; returns the new length.
    pub fn push_front(&self, item: &T) -> Result<u64> {
        let item = encode(item, "shared list item")?;
        self.store().list_push(&self.handle.name, &[item], true)
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>> {
        self.decode_opt(self.store().list_pop(&self.handle.name, false)?)
    }

    /// Removes and returns the first item (a FIFO when pushed with [`push`](Self::push)).
    pub fn pop_front(&self) -> Result<Option<T>> {
        self.decode_opt(self.store().list_pop(&self.handle.name, true)?)
    }

    /// The item at `index`.
    pub fn get(&self, index: u64) -> Result<Option<T>> {
        self.decode_opt(self.store().list_get(&self.handle.name, index)?)
    }

    /// Replaces the item at `index`; an index past the end is an error that says so.
    pub fn set(&self, index: u64, item: &T) -> Result<()> {
        let item = encode(item, "shared list item")?;
        if self.store().list_set(&self.handle.name, index, &item)? {
            return Ok(());
        }
        Err(BrokerError::BadRequest {
            what: "shared list index",
            reason: format!(
                "{:?} has no index {index} (it holds {} items)",
                self.handle.name,
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
            .list_range(&self.handle.name, range.start, count)?
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
        SharedList::new(self.handle.clone())
    }
}

impl<T> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.debug("SharedList", f)
    }
}

impl<T> Serialize for SharedList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Handle::deserialize(d).map(SharedList::new)
    }
}
