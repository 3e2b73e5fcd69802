//! How a batch of events is stored (an SQLite `events` row, a Redis stream entry): compact,
//! since a busy worker with events on writes one event per task. Positional MessagePack behind
//! a marker byte, the batch's names (task, queue, worker) written once each, ids as two
//! integers, kinds and states as their index. A body without the marker is the earlier form
//! (MessagePack with field names) and still decodes, so a stream written by an older worker
//! stays readable.

use lovage_core::{TaskId, TaskState};

use super::events::{Event, EventKind};
use crate::Timestamp;

/// First byte of a compact batch: MessagePack's one never-used marker, so no earlier body
/// (which starts with an array marker) can be taken for one.
const COMPACT: u8 = 0xc1;

/// One event, positionally: ts, kind, id (high, low), name, queue, worker (indices into the
/// batch's names), state, runtime_ms, retries, error.
type Row = (
    i64,
    u8,
    Option<(u64, u64)>,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<u8>,
    Option<u64>,
    Option<u32>,
    Option<String>,
);

/// Encodes a batch (`seq` is not stored: the broker numbers events as it appends them); no
/// events encode as no bytes, which a backend stores nothing for.
pub(crate) fn encode_batch(events: &[Event]) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<&str> = Vec::new();
    let mut rows: Vec<Row> = Vec::with_capacity(events.len());
    for e in events {
        let id = e.task_id.map(|id| {
            let v = id.as_uuid().as_u128();
            ((v >> 64) as u64, v as u64)
        });
        rows.push((
            e.ts.as_millis(),
            EventKind::ALL
                .iter()
                .position(|k| *k == e.kind)
                .unwrap_or(0) as u8,
            id,
            name_index(&mut names, &e.name),
            name_index(&mut names, &e.queue),
            name_index(&mut names, &e.worker),
            e.state
                .and_then(|s| TaskState::ALL.iter().position(|t| *t == s))
                .map(|i| i as u8),
            e.runtime_ms,
            e.retries,
            e.error.clone(),
        ));
    }
    let mut out = vec![COMPACT];
    rmp_serde::encode::write(&mut out, &(names, rows))?;
    Ok(out)
}

/// The index of `s` among the batch's `names`, added if new. A batch repeats a handful of
/// names: a linear search beats hashing here.
fn name_index<'a>(names: &mut Vec<&'a str>, s: &'a Option<String>) -> Option<u32> {
    let s = s.as_deref()?;
    Some(match names.iter().position(|n| *n == s) {
        Some(i) => i as u32,
        None => {
            names.push(s);
            (names.len() - 1) as u32
        }
    })
}

/// Decodes a batch in either form (no bytes: no events); says what is wrong with one that does
/// not decode.
pub(crate) fn decode_batch(body: &[u8]) -> Result<Vec<Event>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = body.strip_prefix(&[COMPACT]) else {
        return rmp_serde::from_slice(body).map_err(|e| e.to_string());
    };
    let (names, rows): (Vec<String>, Vec<Row>) =
        rmp_serde::from_slice(rest).map_err(|e| e.to_string())?;
    let name = |i: Option<u32>| -> Result<Option<String>, String> {
        i.map(|i| {
            names
                .get(i as usize)
                .cloned()
                .ok_or_else(|| format!("name {i} of {} in the batch", names.len()))
        })
        .transpose()
    };
    rows.into_iter()
        .map(
            |(ts, kind, id, n, q, w, state, runtime_ms, retries, error)| {
                Ok(Event {
                    seq: 0,
                    ts: Timestamp::from_millis(ts),
                    kind: *EventKind::ALL
                        .get(kind as usize)
                        .ok_or_else(|| format!("unknown event kind {kind}"))?,
                    task_id: id.map(|(hi, lo)| {
                        TaskId::from_uuid(uuid::Uuid::from_u128(
                            (u128::from(hi) << 64) | u128::from(lo),
                        ))
                    }),
                    name: name(n)?,
                    queue: name(q)?,
                    worker: name(w)?,
                    state: state
                        .map(|s| {
                            TaskState::ALL
                                .get(s as usize)
                                .copied()
                                .ok_or_else(|| format!("unknown task state {s}"))
                        })
                        .transpose()?,
                    runtime_ms,
                    retries,
                    error,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        let mut a = Event::new(EventKind::TaskSucceeded);
        a.task_id = Some(TaskId::new());
        a.name = Some("lovage.noop".into());
        a.queue = Some("default".into());
        a.worker = Some("w1@host.42".into());
        a.state = Some(TaskState::Success);
        a.runtime_ms = Some(3);
        a.retries = Some(1);
        let mut b = a.clone();
        b.kind = EventKind::TaskFailed;
        b.task_id = Some(TaskId::new());
        b.state = Some(TaskState::Failure);
        b.error = Some("boom".into());
        let mut c = Event::new(EventKind::WorkerHeartbeat);
        c.worker = Some("w2@host.43".into());
        vec![a, b, c]
    }

    #[test]
    fn a_batch_round_trips_and_is_smaller_than_the_named_form() {
        let events = sample();
        let compact = encode_batch(&events).unwrap();
        assert_eq!(decode_batch(&compact).unwrap(), events);
        let named = rmp_serde::to_vec_named(&events).unwrap();
        assert!(
            compact.len() * 2 < named.len(),
            "{} vs {}",
            compact.len(),
            named.len()
        );
    }

    #[test]
    fn no_events_are_no_bytes() {
        assert_eq!(encode_batch(&[]).unwrap(), Vec::<u8>::new());
        assert_eq!(decode_batch(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn the_earlier_named_form_still_decodes() {
        let events = sample();
        let named = rmp_serde::to_vec_named(&events).unwrap();
        assert_eq!(decode_batch(&named).unwrap(), events);
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let compact = encode_batch(&sample()).unwrap();
        for cut in 0..compact.len() {
            let _ = decode_batch(&compact[..cut]);
        }
        let mut bad = compact.clone();
        // The first row's kind (after the marker, the pair's and the names' headers).
        for b in bad.iter_mut().skip(1) {
            *b = 0xff;
        }
        assert!(decode_batch(&bad).is_err());
    }
}
