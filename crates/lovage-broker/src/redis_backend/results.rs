//! The result store's keys: one hash per second of task creation, not one key per result.
//!
//! A key per result made Redis look each one up in its keyspace and again in its table of
//! expiry times, and a `SET` per result ran as a script call of its own: a fifth of Redis's
//! time at 50,000 tasks a second. Results of tasks created in the same second (read from the
//! id, a UUID v7) share a hash instead: `P:r:{second}` for results with a time to live, whose
//! expiry is raised to the latest of theirs, and `P:rk:{second}` for results kept forever. A
//! batch of results is a few variadic commands in one MULTI/EXEC transaction (a result moving
//! from one hash to the other is never seen in neither), and reads are transactions too.
//!
//! A hash lives as long as its longest-lived result, so readers skip records past their own
//! expiry; memory is held until the hash expires (tasks created in one second usually finish
//! together with the same time to live). A second's hash stays small enough (50,000 fields at
//! 50,000 tasks a second) that Redis frees it at expiry without a noticeable pause;
//! `lazyfree-lazy-expire yes` moves even that off Redis's main thread.
//!
//! Waiters first add their id to `P:waiting`, then read; a batch is written, then a small
//! script in the same round trip checks `P:waiting` (commands on one connection run in order)
//! and wakes only the ids found there, through their `P:n:{id}` list. So no wake-up is lost
//! and an unwatched result costs one element of one ZMSCORE.

use std::collections::{HashMap, HashSet};

use lovage_core::TaskId;

use super::RedisBackend;
use crate::corrupt::unreadable_result;
use crate::{Result, ResultRecord, Timestamp};

/// Tasks created within this span share their results' hashes.
const BUCKET_MS: u64 = 1_000;

/// The second of a task id: its first 48 bits are its creation time in milliseconds. Ids that
/// are not UUID v7 (a beat tick's v5 id) have other bits there and land in buckets of their own.
fn bucket(id: TaskId) -> u64 {
    let b = id.as_uuid().as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]) / BUCKET_MS
}

/// What one batch does to one result hash.
#[derive(Default)]
struct HashWrites {
    set: Vec<(String, String)>,
    delete: Vec<String>,
    /// Latest expiry of the results set here; none for the hash of kept results.
    expire_at: Option<Timestamp>,
}

impl RedisBackend {
    /// A bucket's hash of results with a time to live (`P:r:`), or of results kept (`P:rk:`).
    fn result_key(&self, bucket: u64, kept: bool) -> String {
        let family = if kept { "rk" } else { "r" };
        self.key(&format!("{family}:{bucket}"))
    }

    /// Writes result records (a later record of the same id in `records` wins), then wakes the
    /// waiters of the final ones.
    pub(super) fn store_results(&self, records: &[ResultRecord]) -> Result<()> {
        let now = Timestamp::now();
        for chunk in records.chunks(500) {
            // Keyed by (bucket, kept?): the key names are written once per hash.
            let mut hashes: HashMap<(u64, bool), HashWrites> = HashMap::new();
            let mut seen = HashSet::new();
            let mut finals = Vec::new();
            for r in chunk.iter().rev().filter(|r| seen.insert(r.id)) {
                let id = r.id.to_string();
                let b = bucket(r.id);
                let (expiring, kept) = ((b, false), (b, true));
                let body = serde_json::to_string(r).map_err(|e| self.err("store results", e))?;
                if r.state.is_final() {
                    finals.push(id.clone());
                }
                // A record lives in one of the two hashes and is deleted from the other.
                let (keep_in, delete_from) = match r.expires {
                    Some(t) if t <= now => {
                        hashes.entry(expiring).or_default().delete.push(id.clone());
                        (None, kept)
                    }
                    Some(t) => {
                        let h = hashes.entry(expiring).or_default();
                        h.expire_at = h.expire_at.max(Some(t));
                        (Some(h), kept)
                    }
                    None => (Some(hashes.entry(kept).or_default()), expiring),
                };
                if let Some(h) = keep_in {
                    h.set.push((id.clone(), body));
                }
                hashes.entry(delete_from).or_default().delete.push(id);
            }
            let mut pipe = redis::pipe();
            pipe.cmd("MULTI").ignore();
            for (&(b, kept), h) in &hashes {
                let key = self.result_key(b, kept);
                if !h.set.is_empty() {
                    pipe.cmd("HSET").arg(&key).arg(&h.set).ignore();
                }
                if let Some(t) = h.expire_at {
                    // Relative, so Redis's clock counts it. NX sets an expiry on a new hash;
                    // GT only ever lengthens it.
                    let ms = (t - now).as_millis().max(1) as u64;
                    for when in ["NX", "GT"] {
                        pipe.cmd("PEXPIRE").arg(&key).arg(ms).arg(when).ignore();
                    }
                }
                if !h.delete.is_empty() {
                    pipe.cmd("HDEL").arg(&key).arg(&h.delete).ignore();
                }
            }
            pipe.cmd("EXEC").ignore();
            if finals.is_empty() {
                self.with_conn("store results", |c| pipe.query::<()>(c))?;
                continue;
            }
            // The wake-ups ride in the same round trip, after the writes.
            let wake = &self.scripts.wake_waiters;
            pipe.cmd("EVALSHA")
                .arg(wake.get_hash())
                .arg(0)
                .arg(&self.prefix)
                .arg(&finals)
                .ignore();
            let stored = self.with_conn("store results", |c| match pipe.query::<()>(c) {
                // A server that has not seen the script yet (or lost it in a restart): the
                // writes are done; run the wake-ups again, loading the script.
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => wake
                    .prepare_invoke()
                    .arg(&self.prefix)
                    .arg(&finals)
                    .invoke::<()>(c),
                other => other,
            });
            stored?;
        }
        Ok(())
    }

    /// The records of `ids`, in order, read in one round trip. With `waiter` (an id and until
    /// when), that waiter is registered in `P:waiting` first, in the same round trip.
    pub(super) fn read_results(
        &self,
        ids: &[TaskId],
        waiter: Option<(&str, Timestamp)>,
    ) -> Result<Vec<Option<ResultRecord>>> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some((member, until)) = waiter {
            let waiting = self.key("waiting");
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&waiting)
                .arg("-inf")
                .arg(Timestamp::now().as_millis())
                .ignore();
            pipe.cmd("ZADD")
                .arg(&waiting)
                .arg(until.as_millis())
                .arg(member)
                .ignore();
        }
        // Per bucket, the positions of its ids in `ids`.
        let mut buckets: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let b = bucket(*id);
            match buckets.iter_mut().find(|(x, _)| *x == b) {
                Some((_, at)) => at.push(i),
                None => buckets.push((b, vec![i])),
            }
        }
        for (b, at) in &buckets {
            let fields: Vec<String> = at.iter().map(|&i| ids[i].to_string()).collect();
            pipe.cmd("HMGET")
                .arg(self.result_key(*b, false))
                .arg(&fields);
            pipe.cmd("HMGET")
                .arg(self.result_key(*b, true))
                .arg(&fields);
        }
        let replies: Vec<Vec<Option<Vec<u8>>>> =
            self.with_conn("read results", |c| pipe.query(c))?;
        let now = Timestamp::now();
        let mut out: Vec<Option<ResultRecord>> = (0..ids.len()).map(|_| None).collect();
        for ((_, at), pair) in buckets.iter().zip(replies.chunks(2)) {
            for (j, &i) in at.iter().enumerate() {
                let Some(body) = pair[0][j].as_ref().or(pair[1][j].as_ref()) else {
                    continue;
                };
                // One record that does not decode reads as a FAILURE saying so, for its id alone.
                let record: ResultRecord =
                    serde_json::from_slice(body).unwrap_or_else(|e| unreadable_result(ids[i], e));
                // Its hash may outlive it (see the module docs).
                if record.expires.is_none_or(|t| t > now) {
                    out[i] = Some(record);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_minted_together_share_a_bucket() {
        let (a, b) = (TaskId::new(), TaskId::new());
        let now_ms = Timestamp::now().as_millis() as u64;
        assert!(bucket(a).abs_diff(now_ms / BUCKET_MS) <= 1);
        assert!(bucket(b).abs_diff(bucket(a)) <= 1);
    }
}
