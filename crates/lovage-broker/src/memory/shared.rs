//! Shared dicts and lists on the memory backend: maps under one lock of their own.

use std::collections::{HashMap, VecDeque};
use std::sync::MutexGuard;

use super::MemoryBackend;
use crate::shared::SharedState;
use crate::Result;

/// Every shared dict and list of one memory backend.
#[derive(Default)]
pub(super) struct Objects {
    dicts: HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
    lists: HashMap<String, VecDeque<Vec<u8>>>,
}

impl Objects {
    /// A holders dict (see [`crate::holders_dict`]) with a holder gets the sender's mark:
    /// true; one without is left alone: false.
    pub(super) fn mark_if_held(&mut self, dict: &str) -> bool {
        let Some(d) = self.dicts.get_mut(dict) else {
            return false;
        };
        let held = crate::results::any_holder(d.keys().map(Vec::as_slice));
        if held {
            d.insert(crate::SENDER_RELEASED.to_vec(), b"1".to_vec());
        }
        held
    }

    /// Removes `dict` altogether.
    pub(super) fn drop_dict(&mut self, dict: &str) {
        self.dicts.remove(dict);
    }

    /// Removes `holder` from the holders dict `dict`; true (and the dict cleared) when only
    /// the sender's mark is left.
    pub(super) fn unhold(&mut self, dict: &str, holder: &[u8]) -> bool {
        let Some(d) = self.dicts.get_mut(dict) else {
            return false;
        };
        d.remove(holder);
        let last = !crate::results::any_holder(d.keys().map(Vec::as_slice));
        let released = d.contains_key(crate::SENDER_RELEASED);
        if last {
            // Empty, or only the mark: nothing is left to keep.
            self.dicts.remove(dict);
        }
        last && released
    }
}

impl MemoryBackend {
    pub(super) fn objects(&self) -> MutexGuard<'_, Objects> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SharedState for MemoryBackend {
    fn dict_get(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .objects()
            .dicts
            .get(dict)
            .and_then(|d| d.get(key))
            .cloned())
    }

    fn dict_set(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut o = self.objects();
        let d = o.dicts.entry(dict.to_owned()).or_default();
        d.extend(entries.iter().cloned());
        Ok(())
    }

    fn dict_compare_and_set(
        &self,
        dict: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let mut o = self.objects();
        let d = o.dicts.entry(dict.to_owned()).or_default();
        if d.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => d.insert(key.to_vec(), v.to_vec()),
            None => d.remove(key),
        };
        Ok(true)
    }

    fn dict_remove(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .objects()
            .dicts
            .get_mut(dict)
            .and_then(|d| d.remove(key)))
    }

    fn dict_len(&self, dict: &str) -> Result<u64> {
        Ok(self.objects().dicts.get(dict).map_or(0, |d| d.len() as u64))
    }

    fn dict_entries(&self, dict: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .objects()
            .dicts
            .get(dict)
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn dict_clear(&self, dict: &str) -> Result<()> {
        self.objects().dicts.remove(dict);
        Ok(())
    }

    fn list_push(&self, list: &str, items: &[Vec<u8>], front: bool) -> Result<u64> {
        let mut o = self.objects();
        let l = o.lists.entry(list.to_owned()).or_default();
        for item in items {
            if front {
                l.push_front(item.clone());
            } else {
                l.push_back(item.clone());
            }
        }
        Ok(l.len() as u64)
    }

    fn list_pop(&self, list: &str, front: bool) -> Result<Option<Vec<u8>>> {
        let mut o = self.objects();
        let Some(l) = o.lists.get_mut(list) else {
            return Ok(None);
        };
        Ok(if front { l.pop_front() } else { l.pop_back() })
    }

    fn list_get(&self, list: &str, index: u64) -> Result<Option<Vec<u8>>> {
        let o = self.objects();
        Ok(o.lists
            .get(list)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .cloned())
    }

    fn list_set(&self, list: &str, index: u64, value: &[u8]) -> Result<bool> {
        let mut o = self.objects();
        let slot = o
            .lists
            .get_mut(list)
            .and_then(|l| l.get_mut(usize::try_from(index).ok()?));
        Ok(match slot {
            Some(s) => {
                *s = value.to_vec();
                true
            }
            None => false,
        })
    }

    fn list_range(&self, list: &str, start: u64, count: u64) -> Result<Vec<Vec<u8>>> {
        let o = self.objects();
        let Some(l) = o.lists.get(list) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        Ok(l.iter().skip(start).take(count).cloned().collect())
    }

    fn list_len(&self, list: &str) -> Result<u64> {
        Ok(self.objects().lists.get(list).map_or(0, |l| l.len() as u64))
    }

    fn list_clear(&self, list: &str) -> Result<()> {
        self.objects().lists.remove(list);
        Ok(())
    }
}
