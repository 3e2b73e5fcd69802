//! Task identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task's identifier: a UUID v7, so ids sort by creation time (to the millisecond, then by a
/// counter) and two hosts never mint the same one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// Mints a new id; ids minted later in this process sort after earlier ones.
    ///
    /// Layout (RFC 9562 UUID v7): 48 bits of Unix milliseconds, then a 16-bit counter of ids
    /// minted in this process within that millisecond (on overflow the millisecond moves on),
    /// then 58 random bits from a per-thread generator seeded by the OS once. `Uuid::now_v7`
    /// asks the kernel for randomness on every call, a tenth of a client's time when it sends
    /// 100,000 tasks.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        /// (milliseconds << 16) | counter of the last id minted here.
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut last = LAST.load(Ordering::Relaxed);
        let stamp = loop {
            let next = (now_ms << 16).max(last + 1);
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        let (ms, counter) = (stamp >> 16, (stamp & 0xffff) as u16);
        let random = RNG.with(|rng| rng.borrow_mut().u64(..));
        let mut tail = [0u8; 10];
        // Bytes 6-7: version nibble (set by the builder) + the counter's top 12 bits; byte 8:
        // variant bits (set by the builder) + the counter's low 4 bits and 2 random bits; the
        // rest random. The counter sits right after the time, so ids keep their order.
        tail[0] = (counter >> 12) as u8;
        tail[1] = (counter >> 4) as u8;
        tail[2] = (((counter & 0xf) as u8) << 2) | (random as u8 & 0b11);
        tail[3..10].copy_from_slice(&random.to_le_bytes()[1..8]);
        TaskId(uuid::Builder::from_unix_timestamp_millis(ms, &tail).into_uuid())
    }

    /// The all-zero id, which no task has (the result id of an empty chain).
    pub fn nil() -> Self {
        TaskId(uuid::Uuid::nil())
    }

    /// An id from a UUID (a derived one, say: `lovage beat` names its ticks with UUID v5).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        TaskId(uuid)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }

    /// The id's text (as `Display` writes it) in `buf`, without allocating: for hot paths that
    /// write thousands of ids into one buffer.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

thread_local! {
    /// Seeded from the OS (through `RandomState`, which asks the kernel once per thread) and
    /// the process id: fastrand's own default seed hashes the monotonic clock and the thread
    /// id, which two processes started together can share, and equal seeds would mint equal
    /// ids.
    static RNG: std::cell::RefCell<fastrand::Rng> = std::cell::RefCell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        fastrand::Rng::with_seed(h.finish())
    });
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0.hyphenated())
    }
}

/// The text was not a task id.
#[derive(Debug, thiserror::Error)]
#[error("not a task id: {input:?} ({reason})")]
pub struct ParseTaskIdError {
    input: String,
    reason: String,
}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|e| ParseTaskIdError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_and_round_trip() {
        let ids: Vec<TaskId> = (0..100_000).map(|_| TaskId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "no two alike");
        assert_eq!(ids[0].as_uuid().get_version_num(), 7);
        assert_eq!(ids[0].as_uuid().get_variant(), uuid::Variant::RFC4122);
        let text = ids[7].to_string();
        assert_eq!(text.parse::<TaskId>().unwrap(), ids[7]);
        assert_eq!(ids[7].encode(&mut [0; 36]), text);
        assert!("nope"
            .parse::<TaskId>()
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
