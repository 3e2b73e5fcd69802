//! Sending tasks: their queue order and the commands that store a chunk of them.

use super::resp;
use crate::{Envelope, Timestamp};

/// Tasks per pipelined send. Small enough that the send buffer (~250 bytes a task) stays under
/// glibc's mmap threshold (bigger ones were mapped and unmapped each time, and page faults and
/// copies took a third of a sender's CPU), and small enough that Redis starts storing one
/// chunk while the sender writes the next.
pub(super) const ENQUEUE_CHUNK: usize = 250;
/// Tokens kept in a queue's wake-up list: enough for every waiting consumer.
const WAKE_TOKENS: usize = 64;

/// Scores of one priority level: (9 − priority) · band + sequence. Ten bands stay below 2⁵³,
/// where a sorted-set score (a double) is still exact.
const PRIORITY_BAND: u64 = 900_000_000_000_000;
/// The sequence counts microseconds from 2025-01-01 (it fits a band until 2053).
const SEQUENCE_EPOCH_MS: u64 = 1_735_689_600_000;

/// The ready-queue score of a task of `priority` sent now: priority first, FIFO within.
pub(super) fn ready_score(priority: u8) -> u64 {
    (9 - u64::from(priority.min(9))) * PRIORITY_BAND + next_sequence()
}

/// The FIFO sequence a sender stamps: its clock in microseconds since [`SEQUENCE_EPOCH_MS`],
/// strictly increasing within the process. Redis would make a shared counter one more round
/// trip per send.
fn next_sequence() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let now = micros.saturating_sub(SEQUENCE_EPOCH_MS * 1000);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Writes a task's value in `P:tasks`: `"{next delivery} {score} {queue length} {queue}"`
/// followed by the envelope (named MessagePack). The scripts read the front; the envelope goes
/// to the worker untouched.
pub(super) fn write_task_value(
    out: &mut Vec<u8>,
    e: &Envelope,
    score: u64,
) -> Result<(), rmp_serde::encode::Error> {
    let mut n = itoa::Buffer::new();
    for number in [u64::from(e.attempts) + 1, score, e.queue.len() as u64] {
        out.extend_from_slice(n.format(number).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(e.queue.as_bytes());
    rmp_serde::encode::write_named(out, e)
}

/// The delivery number and the envelope of a task value written by [`write_task_value`].
pub(super) fn split_task_value(v: &[u8]) -> Option<(u32, &[u8])> {
    let mut fields = v.splitn(4, |b| *b == b' ');
    let delivery = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let _score = fields.next()?;
    let queue_len: usize = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((delivery, fields.next()?.get(queue_len..)?))
}

/// Writes chunks of tasks as the commands that store them (see the key table in the module
/// above), each chunk in MULTI/EXEC: `HSET tasks`, and per queue `SADD queues`, `ZADD` into
/// its scheduled and ready sets, and wake-up tokens. Its buffers are kept from chunk to chunk.
pub(super) struct EnqueuePacker {
    prefix: String,
    /// The commands of the last chunk packed, ready to send.
    pub(super) buf: Vec<u8>,
    /// One task value or key being written.
    scratch: Vec<u8>,
    queues: Vec<QueueShare>,
    /// Adds the tasks to the task index `P:ix` (`?task_index=1`).
    index: bool,
}

/// One queue's share of a chunk.
struct QueueShare {
    queue: String,
    /// (score, id) of tasks ready now.
    ready: Vec<(u64, [u8; 36])>,
    /// (due in ms, id) of tasks with an ETA, or queued for a worker until their steal time.
    scheduled: Vec<(u64, [u8; 36])>,
    /// Per worker, (steal time in ms, id) of the tasks queued for it (also in `scheduled`).
    affine: Vec<(String, Vec<Member>)>,
}

/// A sorted-set member as the packer writes it: (score, id).
type Member = (u64, [u8; 36]);

impl EnqueuePacker {
    /// A packer for keys under `prefix`, for chunks of up to `tasks` tasks (a single send
    /// should not allocate room for a whole chunk).
    pub(super) fn new(prefix: &str, tasks: usize, index: bool) -> Self {
        EnqueuePacker {
            prefix: prefix.to_owned(),
            buf: Vec::with_capacity(tasks.min(ENQUEUE_CHUNK) * 256),
            scratch: Vec::with_capacity(256),
            queues: Vec::new(),
            index,
        }
    }

    /// Writes the commands storing `chunk` into `buf` (replacing what was there) and returns
    /// how many replies they get. They are one MULTI/EXEC transaction, so Redis stores all of
    /// the chunk or none of it: an OOM or a dropped connection between the task hash and the
    /// queue entries would leave tasks in no queue, never delivered, never counted.
    pub(super) fn pack(
        &mut self,
        chunk: &[Envelope],
        now: Timestamp,
    ) -> Result<usize, rmp_serde::encode::Error> {
        let (buf, scratch) = (&mut self.buf, &mut self.scratch);
        buf.clear();
        for q in &mut self.queues {
            q.ready.clear();
            q.scheduled.clear();
            q.affine.clear();
        }
        resp::command(buf, 1);
        resp::arg(buf, b"MULTI");
        resp::command(buf, 2 + 2 * chunk.len());
        resp::arg(buf, b"HSET");
        key(buf, scratch, &self.prefix, &["tasks"]);
        for e in chunk {
            let mut id = [0u8; 36];
            e.id.encode(&mut id);
            let score = ready_score(e.priority);
            scratch.clear();
            write_task_value(scratch, e, score)?;
            resp::arg(buf, &id);
            resp::arg(buf, scratch);
            let i = match self.queues.iter().position(|q| q.queue == e.queue) {
                Some(i) => i,
                None => {
                    self.queues.push(QueueShare {
                        queue: e.queue.clone(),
                        ready: Vec::new(),
                        scheduled: Vec::new(),
                        affine: Vec::new(),
                    });
                    self.queues.len() - 1
                }
            };
            let share = &mut self.queues[i];
            match (e.eta, e.affinity_at(now)) {
                (Some(eta), _) if eta > now => share.scheduled.push((eta.as_millis() as u64, id)),
                (_, Some(a)) => {
                    let until = a.until.as_millis() as u64;
                    share.scheduled.push((until, id));
                    match share.affine.iter_mut().find(|(w, _)| *w == a.worker) {
                        Some((_, ids)) => ids.push((until, id)),
                        None => share.affine.push((a.worker.clone(), vec![(until, id)])),
                    }
                }
                _ => share.ready.push((score, id)),
            }
        }
        // The task index (`{id} {queue}`, ordered by id) and the count of tasks sent: two
        // variadic commands per chunk, no round trip of their own.
        let mut commands = 2;
        if self.index {
            resp::command(buf, 2 + 2 * chunk.len());
            resp::arg(buf, b"ZADD");
            key(buf, scratch, &self.prefix, &["ix"]);
            for e in chunk {
                let mut id = [0u8; 36];
                resp::arg(buf, b"0");
                scratch.clear();
                scratch.extend_from_slice(e.id.encode(&mut id).as_bytes());
                scratch.push(b' ');
                scratch.extend_from_slice(e.queue.as_bytes());
                resp::arg(buf, scratch);
            }
            commands += 1;
        }
        resp::command(buf, 4);
        resp::arg(buf, b"HINCRBY");
        key(buf, scratch, &self.prefix, &["cnt"]);
        resp::arg(buf, b"sent");
        resp::int_arg(buf, chunk.len());
        for share in &self.queues {
            if share.ready.is_empty() && share.scheduled.is_empty() {
                continue;
            }
            let q = share.queue.as_str();
            resp::command(buf, 3);
            resp::arg(buf, b"SADD");
            key(buf, scratch, &self.prefix, &["queues"]);
            resp::arg(buf, q.as_bytes());
            commands += 1;
            if !share.scheduled.is_empty() {
                zadd(buf, scratch, &self.prefix, &["s:", q], &share.scheduled);
                commands += 1;
            }
            // A worker's own set of the tasks queued for it: a hint (the scheduled set is the
            // truth) that expires a minute after its newest steal time, as the scripts' `place_affine`.
            for (worker, ids) in &share.affine {
                let parts = ["a:", q, ":", worker.as_str()];
                zadd(buf, scratch, &self.prefix, &parts, ids);
                let newest = ids.iter().map(|(t, _)| *t).max().unwrap_or(0);
                resp::command(buf, 3);
                resp::arg(buf, b"PEXPIREAT");
                key(buf, scratch, &self.prefix, &parts);
                resp::int_arg(buf, newest + 60_000);
                // That worker's own wake-up token, so its waiting reserve wakes.
                let wake = ["w:", q, ":", worker.as_str()];
                resp::command(buf, 3);
                resp::arg(buf, b"RPUSH");
                key(buf, scratch, &self.prefix, &wake);
                resp::arg(buf, b"1");
                resp::command(buf, 4);
                resp::arg(buf, b"LTRIM");
                key(buf, scratch, &self.prefix, &wake);
                resp::arg(buf, b"0");
                resp::int_arg(buf, WAKE_TOKENS - 1);
                resp::command(buf, 3);
                resp::arg(buf, b"PEXPIREAT");
                key(buf, scratch, &self.prefix, &wake);
                resp::int_arg(buf, newest + 60_000);
                commands += 5;
            }
            if !share.ready.is_empty() {
                zadd(buf, scratch, &self.prefix, &["q:", q], &share.ready);
                let tokens = share.ready.len().min(WAKE_TOKENS);
                resp::command(buf, 2 + tokens);
                resp::arg(buf, b"RPUSH");
                key(buf, scratch, &self.prefix, &["w:", q]);
                for _ in 0..tokens {
                    resp::arg(buf, b"1");
                }
                resp::command(buf, 4);
                resp::arg(buf, b"LTRIM");
                key(buf, scratch, &self.prefix, &["w:", q]);
                resp::arg(buf, b"0");
                resp::int_arg(buf, WAKE_TOKENS - 1);
                commands += 3;
            }
        }
        resp::command(buf, 1);
        resp::arg(buf, b"EXEC");
        // MULTI's OK, a QUEUED per command, and EXEC's array of their replies.
        Ok(commands + 2)
    }
}

/// Writes `ZADD {prefix}:{parts...} score id score id ...`.
fn zadd(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    prefix: &str,
    parts: &[&str],
    members: &[(u64, [u8; 36])],
) {
    resp::command(out, 2 + 2 * members.len());
    resp::arg(out, b"ZADD");
    key(out, scratch, prefix, parts);
    for (score, id) in members {
        resp::int_arg(out, *score);
        resp::arg(out, id);
    }
}

/// Writes the key `{prefix}:{parts...}` as an argument.
fn key(out: &mut Vec<u8>, scratch: &mut Vec<u8>, prefix: &str, parts: &[&str]) {
    scratch.clear();
    scratch.extend_from_slice(prefix.as_bytes());
    scratch.push(b':');
    for p in parts {
        scratch.extend_from_slice(p.as_bytes());
    }
    resp::arg(out, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lovage_core::{Codec, Signature};

    #[test]
    fn a_task_value_splits_back_into_delivery_and_envelope() {
        let mut sig = Signature::new("t", &[1], Codec::Json).unwrap();
        // Spaces and digits in the queue name must not confuse the reader.
        sig.options.queue = Some("a 12 queue".into());
        let mut e = Envelope::from_signature(sig);
        e.attempts = 2;
        let mut v = Vec::new();
        write_task_value(&mut v, &e, 123).unwrap();
        let (delivery, envelope) = split_task_value(&v).unwrap();
        assert_eq!(delivery, 3);
        let back: Envelope = rmp_serde::from_slice(envelope).unwrap();
        assert_eq!((back.id, back.queue.as_str()), (e.id, "a 12 queue"));
        assert!(split_task_value(b"3 1 99 short").is_none());
    }
}
