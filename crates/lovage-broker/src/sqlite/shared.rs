//! Shared dicts and lists in the SQLite file: rows of `shared_dicts` and `shared_lists`, each
//! call one transaction (or one statement for a read).

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteBackend;
use crate::shared::SharedState;
use crate::Result;

/// A list item's `pos` at `index` (0 first), if there is one.
fn pos_at(tx: &Transaction<'_>, list: &str, index: u64) -> rusqlite::Result<Option<i64>> {
    let Ok(index) = i64::try_from(index) else {
        return Ok(None);
    };
    tx.prepare_cached(
        "SELECT pos FROM shared_lists WHERE name = ?1 ORDER BY pos LIMIT 1 OFFSET ?2",
    )?
    .query_row(params![list, index], |r| r.get(0))
    .optional()
}

impl SharedState for SqliteBackend {
    fn dict_get(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let conn = self.conn();
        conn.prepare_cached("SELECT value FROM shared_dicts WHERE name = ?1 AND key = ?2")
            .and_then(|mut q| q.query_row(params![dict, key], |r| r.get(0)).optional())
            .map_err(|e| self.err("shared dict get", e))
    }

    fn dict_set(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.write("shared dict set", |tx| {
            let mut q = tx.prepare_cached(
                "INSERT INTO shared_dicts (name, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name, key) DO UPDATE SET value = excluded.value",
            )?;
            for (k, v) in entries {
                q.execute(params![dict, k, v])?;
            }
            Ok(())
        })
    }

    fn dict_insert_absent(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<bool>> {
        self.write("shared dict insert absent", |tx| {
            let mut q = tx.prepare_cached(
                "INSERT INTO shared_dicts (name, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name, key) DO NOTHING",
            )?;
            let mut set = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                set.push(q.execute(params![dict, k, v])? == 1);
            }
            Ok(set)
        })
    }

    fn dict_compare_and_set(
        &self,
        dict: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.write("shared dict compare-and-set", |tx| {
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM shared_dicts WHERE name = ?1 AND key = ?2")?
                .query_row(params![dict, key], |r| r.get(0))
                .optional()?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            match new {
                Some(v) => tx
                    .prepare_cached(
                        "INSERT INTO shared_dicts (name, key, value) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(name, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![dict, key, v])?,
                None => tx
                    .prepare_cached("DELETE FROM shared_dicts WHERE name = ?1 AND key = ?2")?
                    .execute(params![dict, key])?,
            };
            Ok(true)
        })
    }

    fn dict_remove(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.write("shared dict remove", |tx| {
            tx.prepare_cached(
                "DELETE FROM shared_dicts WHERE name = ?1 AND key = ?2 RETURNING value",
            )?
            .query_row(params![dict, key], |r| r.get(0))
            .optional()
        })
    }

    fn dict_len(&self, dict: &str) -> Result<u64> {
        let conn = self.conn();
        conn.prepare_cached("SELECT count(*) FROM shared_dicts WHERE name = ?1")
            .and_then(|mut q| q.query_row([dict], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(|e| self.err("shared dict len", e))
    }

    fn dict_is_empty(&self, dict: &str) -> Result<bool> {
        let conn = self.conn();
        conn.prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM shared_dicts WHERE name = ?1)")
            .and_then(|mut q| q.query_row([dict], |r| r.get::<_, bool>(0)))
            .map_err(|e| self.err("shared dict is empty", e))
    }

    fn dict_entries(&self, dict: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let conn = self.conn();
        conn.prepare_cached("SELECT key, value FROM shared_dicts WHERE name = ?1")
            .and_then(|mut q| {
                q.query_map([dict], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err("shared dict entries", e))
    }

    fn dict_clear(&self, dict: &str) -> Result<()> {
        self.write("shared dict clear", |tx| {
            tx.prepare_cached("DELETE FROM shared_dicts WHERE name = ?1")?
                .execute([dict])?;
            Ok(())
        })
    }

    fn dict_clear_many(&self, dicts: &[String]) -> Result<()> {
        if dicts.is_empty() {
            return Ok(());
        }
        self.write("shared dict clear", |tx| {
            let mut clear = tx.prepare_cached("DELETE FROM shared_dicts WHERE name = ?1")?;
            for d in dicts {
                clear.execute([d])?;
            }
            Ok(())
        })
    }

    fn list_push(&self, list: &str, items: &[Vec<u8>], front: bool) -> Result<u64> {
        self.write("shared list push", |tx| {
            let (first, last): (Option<i64>, Option<i64>) = tx
                .prepare_cached("SELECT min(pos), max(pos) FROM shared_lists WHERE name = ?1")?
                .query_row([list], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO shared_lists (name, pos, value) VALUES (?1, ?2, ?3)",
            )?;
            let (mut front_pos, mut back_pos) = (first.unwrap_or(0), last.unwrap_or(-1));
            for item in items {
                let pos = if front {
                    front_pos -= 1;
                    front_pos
                } else {
                    back_pos += 1;
                    back_pos
                };
                insert.execute(params![list, pos, item])?;
            }
            tx.prepare_cached("SELECT count(*) FROM shared_lists WHERE name = ?1")?
                .query_row([list], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    fn list_pop(&self, list: &str, front: bool) -> Result<Option<Vec<u8>>> {
        let sql = if front {
            "DELETE FROM shared_lists WHERE name = ?1 AND pos = \
             (SELECT min(pos) FROM shared_lists WHERE name = ?1) RETURNING value"
        } else {
            "DELETE FROM shared_lists WHERE name = ?1 AND pos = \
             (SELECT max(pos) FROM shared_lists WHERE name = ?1) RETURNING value"
        };
        self.write("shared list pop", |tx| {
            tx.prepare_cached(sql)?
                .query_row([list], |r| r.get(0))
                .optional()
        })
    }

    fn list_get(&self, list: &str, index: u64) -> Result<Option<Vec<u8>>> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT value FROM shared_lists WHERE name = ?1 ORDER BY pos LIMIT 1 OFFSET ?2",
        )
        .and_then(|mut q| q.query_row(params![list, index], |r| r.get(0)).optional())
        .map_err(|e| self.err("shared list get", e))
    }

    fn list_set(&self, list: &str, index: u64, value: &[u8]) -> Result<bool> {
        self.write("shared list set", |tx| {
            let Some(pos) = pos_at(tx, list, index)? else {
                return Ok(false);
            };
            tx.prepare_cached("UPDATE shared_lists SET value = ?3 WHERE name = ?1 AND pos = ?2")?
                .execute(params![list, pos, value])?;
            Ok(true)
        })
    }

    fn list_range(&self, list: &str, start: u64, count: u64) -> Result<Vec<Vec<u8>>> {
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        // SQLite's LIMIT -1 is "no limit".
        let count = i64::try_from(count).unwrap_or(-1);
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT value FROM shared_lists WHERE name = ?1 ORDER BY pos LIMIT ?3 OFFSET ?2",
        )
        .and_then(|mut q| {
            q.query_map(params![list, start, count], |r| r.get(0))?
                .collect()
        })
        .map_err(|e| self.err("shared list range", e))
    }

    fn list_len(&self, list: &str) -> Result<u64> {
        let conn = self.conn();
        conn.prepare_cached("SELECT count(*) FROM shared_lists WHERE name = ?1")
            .and_then(|mut q| q.query_row([list], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(|e| self.err("shared list len", e))
    }

    fn list_clear(&self, list: &str) -> Result<()> {
        self.write("shared list clear", |tx| {
            tx.prepare_cached("DELETE FROM shared_lists WHERE name = ?1")?
                .execute([list])?;
            Ok(())
        })
    }
}
