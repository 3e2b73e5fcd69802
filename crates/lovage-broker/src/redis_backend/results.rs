//! The result store's keys: one hash per second of task creation, not one key per result.
//!
//! A key per result made Redis look each one up in its keyspace and again in its table of
//! expiry times, and a `SET` per result ran as a script call of its own: a fifth of Redis's
//! time at 50,000 tasks a second. Results of tasks created in the same second (read from the
//! id, a UUID v7) share a hash instead: `P:r:{second}` for results with a time to live, whose
//! expiry is raised to the latest of theirs, and `P:rk:{second}` for results kept forever. A
//! batch of results is one script call (`STORE_RESULTS`): it reads each id's stored record,
//! keeps it where the new one does not supersede it (a stale run's outcome), and writes the rest
//! with a few variadic commands, atomically (a result moving from one hash to the other is never
//! seen in neither). Reads are transactions.
//!
//! A hash lives as long as its longest-lived result, so readers skip records past their own
//! expiry; memory is held until the hash expires (tasks created in one second usually finish
//! together with the same time to live). A second's hash stays small enough (50,000 fields at
//! 50,000 tasks a second) that Redis frees it at expiry without a noticeable pause;
//! `lazyfree-lazy-expire yes` moves even that off Redis's main thread.
//!
//! Waiters first add their id to `P:waiting`, then read; the store script, having written,
//! checks `P:waiting` and wakes only the ids found there, through their `P:n:{id}` list. So no
//! wake-up is lost and an unwatched result costs one element of one ZMSCORE.

use std::collections::HashSet;

use lovage_core::TaskId;

use super::RedisBackend;
use crate::corrupt::unreadable_result;
use crate::{Broker, Lease, Result, ResultRecord, Timestamp};

/// Tasks created within this span share their results' hashes.
const BUCKET_MS: u64 = 1_000;

/// The second of a task id: its first 48 bits are its creation time in milliseconds. Ids that
/// are not UUID v7 (a beat tick's v5 id) have other bits there and land in buckets of their own.
pub(super) fn bucket(id: TaskId) -> u64 {
    let b = id.as_uuid().as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]) / BUCKET_MS
}

/// What one store call writes to one bucket's hashes.
struct BucketWrites {
    bucket: u64,
    /// The longest time to live of its records that have one (ms).
    ttl_ms: u64,
    /// Per record: id, flags (see `STORE_FN`), JSON body.
    rows: Vec<(String, String, String)>,
}

impl RedisBackend {
    /// A bucket's hash of results with a time to live (`P:r:`), or of results kept (`P:rk:`).
    pub(super) fn result_key(&self, bucket: u64, kept: bool) -> String {
        let family = if kept { "rk" } else { "r" };
        self.key(&format!("{family}:{bucket}"))
    }

    /// Writes result records where they supersede the stored ones (a later record of the same
    /// id in `records` wins), then wakes the waiters of the final ones stored: one script call
    /// per chunk.
    pub(super) fn store_results(&self, records: &[ResultRecord]) -> Result<()> {
        for chunk in records.chunks(500) {
            let mut inv = self.scripts.store_results.prepare_invoke();
            inv.arg(&self.prefix);
            self.add_record_args(&mut inv, chunk)?;
            self.with_conn("store results", |c| inv.invoke::<i64>(c))?;
        }
        Ok(())
    }

    /// Stores `records` as [`Self::store_results`] does, then completes `leases`, in one script
    /// call when both fit in one chunk (a worker's batch always does).
    pub(super) fn store_and_ack(
        &self,
        records: &[ResultRecord],
        falls: &[crate::ScopeFall],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        if records.is_empty() && leases.is_empty() && falls.is_empty() {
            return crate::Events::publish(self, events);
        }
        if records.len() > 500 || leases.len() > 500 || falls.len() > 500 {
            self.store_results(records)?;
            for f in falls {
                crate::scope::fall_in(self, f)?;
            }
            self.complete(leases)?;
            return crate::Events::publish(self, events);
        }
        let mut inv = self.scripts.store_and_ack.prepare_invoke();
        inv.arg(&self.prefix).arg(leases.len());
        for l in leases {
            inv.arg(format!("{}:{}", l.id, l.fence));
        }
        // The events ride in the same script call: one round trip for the whole batch.
        let body = crate::ops::event_codec::encode_batch(events)
            .map_err(|e| self.err("publish events", e))?;
        inv.arg(events.len()).arg(body);
        inv.arg(falls.len());
        for f in falls {
            use crate::scope::{dict_all, dict_open, member_key};
            inv.arg(self.dict_key(&dict_all(f.scope)))
                .arg(self.dict_key(&dict_open(f.scope)))
                .arg(&member_key(f.member)[..])
                .arg(if f.ok { "d" } else { "f" });
        }
        self.add_record_args(&mut inv, records)?;
        self.with_conn("store results and ack", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }

    /// Adds the arguments `store_records` reads (see `STORE_FN`) for `records`: grouped by
    /// bucket, the last record of an id only.
    fn add_record_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        records: &[ResultRecord],
    ) -> Result<()> {
        let now = Timestamp::now();
        // Per bucket, in order of first appearance.
        let mut buckets: Vec<BucketWrites> = Vec::new();
        let mut seen = HashSet::new();
        for r in records.iter().rev().filter(|r| seen.insert(r.id)) {
            let b = bucket(r.id);
            let body = serde_json::to_string(r).map_err(|e| self.err("store results", e))?;
            // A record lives in one of the two hashes and is deleted from the other. Its
            // time to live is relative, so Redis's clock counts it.
            let (place, ttl_ms) = match r.expires {
                Some(t) if t <= now => ('-', 0),
                Some(t) => ('r', (t - now).as_millis().max(1) as u64),
                None => ('k', 0),
            };
            // The state's letter: what the script counts (SUCCESS, FAILURE, REVOKED).
            let counted = match r.state {
                lovage_core::TaskState::Success => 'S',
                lovage_core::TaskState::Failure => 'F',
                lovage_core::TaskState::Revoked => 'R',
                _ => '-',
            };
            let flags = format!(
                "{place}{}{counted}{}",
                u8::from(r.state.is_final()),
                r.attempts
            );
            let at = match buckets.iter().position(|w| w.bucket == b) {
                Some(at) => at,
                None => {
                    buckets.push(BucketWrites {
                        bucket: b,
                        ttl_ms: 0,
                        rows: Vec::new(),
                    });
                    buckets.len() - 1
                }
            };
            let w = &mut buckets[at];
            w.ttl_ms = w.ttl_ms.max(ttl_ms);
            w.rows.push((r.id.to_string(), flags, body));
        }
        for w in &buckets {
            inv.arg(self.result_key(w.bucket, false))
                .arg(self.result_key(w.bucket, true))
                .arg(w.ttl_ms)
                .arg(w.rows.len());
            for (id, flags, body) in &w.rows {
                inv.arg(id).arg(flags).arg(body);
            }
        }
        Ok(())
    }

    /// Deletes the records of `ids` from their buckets' hashes, with the joins and blobs under
    /// the same ids: one transaction per chunk. Returns how many records went.
    pub(super) fn forget_results(&self, ids: &[TaskId]) -> Result<u64> {
        let mut gone = 0;
        for chunk in ids.chunks(1000) {
            // A few commands per chunk, not three per id: the ids of one burst share a few
            // time buckets, so one HDEL per bucket and family takes all their fields, and one
            // UNLINK all their join and blob keys. Not atomic: a forget half done (the rest is
            // forgotten by the record's time to live) harms nobody, and a long MULTI would
            // hold up the workers' scripts.
            let mut by_bucket: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
            let mut keys = Vec::with_capacity(chunk.len() * 2);
            for id in chunk {
                by_bucket
                    .entry(bucket(*id))
                    .or_default()
                    .push(id.to_string());
                keys.push(self.key(&format!("j:{id}")));
                keys.push(self.key(&format!("b:{id}")));
            }
            let mut pipe = redis::pipe();
            for (b, fields) in &by_bucket {
                pipe.cmd("HDEL").arg(self.result_key(*b, false)).arg(fields);
                pipe.cmd("HDEL").arg(self.result_key(*b, true)).arg(fields);
            }
            pipe.cmd("UNLINK").arg(&keys).ignore();
            let counts: Vec<u64> = self.with_conn("forget results", |c| pipe.query(c))?;
            debug_assert_eq!(counts.len(), by_bucket.len() * 2);
            gone += counts.iter().sum::<u64>();
        }
        Ok(gone)
    }

    /// The keys `UNSHARE` takes after an id: its holders dict, its two result hashes, its join
    /// and its blob.
    fn id_keys(&self, id: TaskId) -> [String; 5] {
        let b = bucket(id);
        [
            self.dict_key(&crate::holders_dict(id)),
            self.result_key(b, false),
            self.result_key(b, true),
            self.key(&format!("j:{id}")),
            self.key(&format!("b:{id}")),
        ]
    }

    /// [`ResultStore::forget_unshared`](crate::ResultStore::forget_unshared): one script call
    /// per chunk of ids, each atomic (an id is checked and forgotten or marked in one step).
    /// The ids go grouped by time bucket (see `FORGET_UNSHARED` for the layout), so that the
    /// common call, where no id is shared, is a few variadic commands on ranges of the
    /// arguments: a client releasing 100,000 futures cost Redis 0.4 s with five commands an id.
    pub(super) fn forget_unshared_results(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let script = redis::Script::new(super::scripts::FORGET_UNSHARED);
        let mut kept = Vec::new();
        // The script unpacks up to two keys per id into one UNLINK: 500 ids stay far below
        // the Lua stack's limit on unpack (about 8,000).
        for chunk in ids.chunks(500) {
            let mut by_bucket: std::collections::BTreeMap<u64, Vec<TaskId>> = Default::default();
            for id in chunk {
                by_bucket.entry(bucket(*id)).or_default().push(*id);
            }
            let mut inv = script.prepare_invoke();
            inv.arg(crate::SENDER_RELEASED)
                .arg(chunk.len())
                .arg(by_bucket.len());
            for (b, ids) in &by_bucket {
                inv.arg(self.result_key(*b, false))
                    .arg(self.result_key(*b, true))
                    .arg(ids.len());
                for id in ids {
                    inv.arg(id.to_string());
                }
            }
            let in_order = || by_bucket.values().flatten();
            for id in in_order() {
                inv.arg(self.dict_key(&crate::holders_dict(*id)));
            }
            for id in in_order() {
                inv.arg(self.key(&format!("j:{id}")))
                    .arg(self.key(&format!("b:{id}")));
            }
            let held: Vec<String> = self.with_conn("forget unshared results", |c| inv.invoke(c))?;
            for id in held {
                kept.push(id.parse().map_err(|_| {
                    crate::BrokerError::Corrupt(format!(
                        "forget_unshared returned {id:?}, which is not a task id"
                    ))
                })?);
            }
        }
        Ok(kept)
    }

    /// [`ResultStore::unshare`](crate::ResultStore::unshare): one script call.
    pub(super) fn unshare_result(&self, id: TaskId, holder: &[u8]) -> Result<bool> {
        let script = redis::Script::new(super::scripts::UNSHARE);
        let mut inv = script.prepare_invoke();
        inv.arg(holder)
            .arg(crate::SENDER_RELEASED)
            .arg(id.to_string())
            .arg(&self.id_keys(id)[..]);
        let forgot: i64 = self.with_conn("unshare a result", |c| inv.invoke(c))?;
        Ok(forgot == 1)
    }

    /// The records of `ids`, after registering a waiter for each of `watched` (for `ttl`) so
    /// that a final record stored after the read pushes a wake-up to its `P:n:<id>` list.
    pub(super) fn read_results_watching(
        &self,
        ids: &[TaskId],
        watched: &[TaskId],
        ttl: std::time::Duration,
    ) -> Result<Vec<Option<ResultRecord>>> {
        let waiting = self.key("waiting");
        let until = (Timestamp::now() + ttl).as_millis();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&waiting)
            .arg("-inf")
            .arg(Timestamp::now().as_millis())
            .ignore();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&waiting);
        for id in watched {
            zadd.arg(until).arg(id.to_string());
        }
        pipe.add_command(zadd).ignore();
        self.with_conn("register result waiters", |c| pipe.query::<()>(c))?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            out.extend(self.read_results(chunk, None)?);
        }
        Ok(out)
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
