//! Every key under a backend's prefix, counted or deleted: for tools that make a prefix for
//! themselves and leave nothing behind (`lovage bench ... --broker redis://...`).

use super::RedisBackend;
use crate::Result;

/// Keys a SCAN step asks for, and keys an UNLINK takes.
const STEP: usize = 1_000;

impl RedisBackend {
    /// The SCAN pattern of this prefix's keys: `{prefix}:*`, the prefix's glob characters
    /// escaped. (A prefix `a` also matches the keys of a prefix `a:b`.)
    fn prefix_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for ch in self.prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push_str(":*");
        pattern
    }

    /// Calls `each` with every batch of keys under the prefix (SCAN: a key written meanwhile
    /// may be missed, none is given twice in one batch).
    fn scan_prefix(
        &self,
        op: &'static str,
        mut each: impl FnMut(&[String]) -> Result<()>,
    ) -> Result<()> {
        let pattern = self.prefix_pattern();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self.with_conn(op, |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(STEP)
                    .query(c)
            })?;
            if !keys.is_empty() {
                each(&keys)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// How many keys live under this backend's prefix (walks the whole keyspace with SCAN).
    pub fn count_prefix_keys(&self) -> Result<u64> {
        let mut n = 0;
        self.scan_prefix("count the prefix's keys", |keys| {
            n += keys.len() as u64;
            Ok(())
        })?;
        Ok(n)
    }

    /// Deletes every key under this backend's prefix, whoever wrote it: tasks, results,
    /// workers, the layout mark. For a prefix a tool made for itself, once nothing uses it
    /// any more (a worker still running writes its keys again). Returns how many went.
    pub fn delete_prefix_keys(&self) -> Result<u64> {
        let mut gone = 0;
        self.scan_prefix("delete the prefix's keys", |keys| {
            gone += self.with_conn("delete the prefix's keys", |c| {
                redis::cmd("UNLINK").arg(keys).query::<u64>(c)
            })?;
            Ok(())
        })?;
        Ok(gone)
    }
}
