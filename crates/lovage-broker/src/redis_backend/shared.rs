//! Shared dicts and lists on Redis: a hash `P:sd:{name}` per dict and a list `P:sl:{name}` per
//! list, so each call is one native command (or a short script where two must be one step).

use std::sync::LazyLock;

use redis::Script;

use super::RedisBackend;
use crate::shared::SharedState;
use crate::Result;

/// Sets (or, without a new value, deletes) a field only if it holds the expected value.
/// ARGV: field, expected present (1/0), expected, new present (1/0), new.
static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
",
    )
});

/// Removes a field and returns its value.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
",
    )
});

/// Sets an item if the index exists (LSET fails on a missing one); 1 when it did.
static SET_IF_THERE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if tonumber(ARGV[1]) >= redis.call('LLEN', KEYS[1]) then return 0 end
redis.call('LSET', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

impl RedisBackend {
    pub(super) fn dict_key(&self, dict: &str) -> String {
        self.key(&format!("sd:{dict}"))
    }

    fn list_key(&self, list: &str) -> String {
        self.key(&format!("sl:{list}"))
    }
}

/// Redis indexes lists with a signed 64-bit number; past it there is no item.
fn redis_index(index: u64) -> Option<i64> {
    i64::try_from(index).ok()
}

impl SharedState for RedisBackend {
    fn dict_get(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_conn("shared dict get", |c| {
            redis::cmd("HGET")
                .arg(self.dict_key(dict))
                .arg(key)
                .query(c)
        })
    }

    fn dict_set(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.dict_key(dict));
        for (k, v) in entries {
            cmd.arg(k).arg(v);
        }
        self.with_conn("shared dict set", |c| cmd.query::<()>(c))
    }

    fn dict_insert_absent(&self, dict: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<bool>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.dict_key(dict);
        let mut pipe = redis::pipe();
        for (k, v) in entries {
            pipe.cmd("HSETNX").arg(&key).arg(k).arg(v);
        }
        let set: Vec<i64> =
            self.with_conn("shared dict insert absent", |c| pipe.query::<Vec<i64>>(c))?;
        Ok(set.into_iter().map(|n| n == 1).collect())
    }

    fn dict_compare_and_set(
        &self,
        dict: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let mut inv = COMPARE_AND_SET.prepare_invoke();
        inv.key(self.dict_key(dict))
            .arg(key)
            .arg(u8::from(expected.is_some()))
            .arg(expected.unwrap_or_default())
            .arg(u8::from(new.is_some()))
            .arg(new.unwrap_or_default());
        Ok(self.with_conn("shared dict compare-and-set", |c| inv.invoke::<i64>(c))? == 1)
    }

    fn dict_remove(&self, dict: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut inv = TAKE.prepare_invoke();
        inv.key(self.dict_key(dict)).arg(key);
        self.with_conn("shared dict remove", |c| inv.invoke(c))
    }

    fn dict_len(&self, dict: &str) -> Result<u64> {
        self.with_conn("shared dict len", |c| {
            redis::cmd("HLEN").arg(self.dict_key(dict)).query(c)
        })
    }

    fn dict_entries(&self, dict: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with_conn("shared dict entries", |c| {
            redis::cmd("HGETALL").arg(self.dict_key(dict)).query(c)
        })
    }

    fn dict_entries_many(&self, dicts: &[String]) -> Result<Vec<crate::shared::DictEntries>> {
        if dicts.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn("shared dict entries", |c| {
            let mut p = redis::pipe();
            for d in dicts {
                p.cmd("HGETALL").arg(self.dict_key(d));
            }
            p.query(c)
        })
    }

    fn dict_clear(&self, dict: &str) -> Result<()> {
        self.with_conn("shared dict clear", |c| {
            redis::cmd("DEL").arg(self.dict_key(dict)).query::<()>(c)
        })
    }

    fn dict_clear_many(&self, dicts: &[String]) -> Result<()> {
        if dicts.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for d in dicts {
            del.arg(self.dict_key(d));
        }
        self.with_conn("shared dict clear", |c| del.query::<()>(c))
    }

    fn list_push(&self, list: &str, items: &[Vec<u8>], front: bool) -> Result<u64> {
        if items.is_empty() {
            return self.list_len(list);
        }
        let mut cmd = redis::cmd(if front { "LPUSH" } else { "RPUSH" });
        cmd.arg(self.list_key(list));
        for item in items {
            cmd.arg(item);
        }
        self.with_conn("shared list push", |c| cmd.query(c))
    }

    fn list_pop(&self, list: &str, front: bool) -> Result<Option<Vec<u8>>> {
        self.with_conn("shared list pop", |c| {
            redis::cmd(if front { "LPOP" } else { "RPOP" })
                .arg(self.list_key(list))
                .query(c)
        })
    }

    fn list_get(&self, list: &str, index: u64) -> Result<Option<Vec<u8>>> {
        let Some(index) = redis_index(index) else {
            return Ok(None);
        };
        self.with_conn("shared list get", |c| {
            redis::cmd("LINDEX")
                .arg(self.list_key(list))
                .arg(index)
                .query(c)
        })
    }

    fn list_set(&self, list: &str, index: u64, value: &[u8]) -> Result<bool> {
        let Some(index) = redis_index(index) else {
            return Ok(false);
        };
        let mut inv = SET_IF_THERE.prepare_invoke();
        inv.key(self.list_key(list)).arg(index).arg(value);
        Ok(self.with_conn("shared list set", |c| inv.invoke::<i64>(c))? == 1)
    }

    fn list_range(&self, list: &str, start: u64, count: u64) -> Result<Vec<Vec<u8>>> {
        let Some(start) = redis_index(start).filter(|_| count > 0) else {
            return Ok(Vec::new());
        };
        // LRANGE's stop is inclusive; -1 is the end.
        let stop = start.checked_add(i64::try_from(count).unwrap_or(i64::MAX) - 1);
        self.with_conn("shared list range", |c| {
            redis::cmd("LRANGE")
                .arg(self.list_key(list))
                .arg(start)
                .arg(stop.unwrap_or(-1))
                .query(c)
        })
    }

    fn list_len(&self, list: &str) -> Result<u64> {
        self.with_conn("shared list len", |c| {
            redis::cmd("LLEN").arg(self.list_key(list)).query(c)
        })
    }

    fn list_clear(&self, list: &str) -> Result<()> {
        self.with_conn("shared list clear", |c| {
            redis::cmd("DEL").arg(self.list_key(list)).query::<()>(c)
        })
    }
}
