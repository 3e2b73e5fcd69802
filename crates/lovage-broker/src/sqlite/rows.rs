//! What goes in and out of a row: envelopes, result records, dead letters and worker records
//! decoded from their columns, and a task's columns that need encoding (JSON, MessagePack) encoded
//! before the transaction that writes them starts (its body fails only with SQLite's errors, and
//! holds the write lock).

use lovage_core::{Codec, TaskState};

use crate::corrupt::CorruptMessage;
use crate::{BrokerError, DeadLetter, Envelope, Result, ResultRecord, Source, Timestamp};

/// A task's encoded columns: options (JSON) and workflow frames (MessagePack, `None` for a
/// plain task).
pub(super) type TaskColumns = (String, Option<Vec<u8>>);

/// The columns of `batch` that need encoding.
pub(super) fn encode_tasks(batch: &[Envelope]) -> Result<Vec<TaskColumns>, Source> {
    batch
        .iter()
        .map(|e| {
            let options = serde_json::to_string(&e.options)?;
            let flow = if e.flow.is_empty() {
                None
            } else {
                Some(rmp_serde::to_vec_named(&e.flow)?)
            };
            Ok((options, flow))
        })
        .collect()
}

/// A value in a column that does not decode: reported as a conversion failure of that column.
fn corrupt<E: std::error::Error + Send + Sync + 'static>(col: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn parse_codec(col: usize, text: &str) -> rusqlite::Result<Codec> {
    text.parse()
        .map_err(|e: String| corrupt(col, std::io::Error::other(e)))
}

/// Columns: id, task, state, value, codec, error, attempts, worker, started, updated, expires.
pub(super) fn row_to_result(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRecord> {
    let id: String = r.get(0)?;
    let state: String = r.get(2)?;
    let error: Option<String> = r.get(5)?;
    Ok(ResultRecord {
        id: id.parse().map_err(|e| corrupt(0, e))?,
        task: r.get(1)?,
        state: state.parse::<TaskState>().map_err(|e| corrupt(2, e))?,
        value: r.get(3)?,
        codec: parse_codec(4, &r.get::<_, String>(4)?)?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| corrupt(5, e))?,
        attempts: r.get::<_, i64>(6)? as u32,
        worker: r.get(7)?,
        started: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        updated: Timestamp::from_millis(r.get(9)?),
        expires: r.get::<_, Option<i64>>(10)?.map(Timestamp::from_millis),
    })
}

/// Columns: id, queue, priority, attempts, task, codec, args, options, eta, expires, created,
/// flow.
pub(super) fn row_to_envelope(r: &rusqlite::Row<'_>) -> rusqlite::Result<Envelope> {
    let id: String = r.get(0)?;
    let options: String = r.get(7)?;
    Ok(Envelope {
        id: id.parse().map_err(|e| corrupt(0, e))?,
        queue: r.get(1)?,
        priority: r.get::<_, i64>(2)? as u8,
        attempts: r.get::<_, i64>(3)? as u32,
        task: r.get(4)?,
        codec: parse_codec(5, &r.get::<_, String>(5)?)?,
        args: r.get(6)?,
        options: serde_json::from_str(&options).map_err(|e| corrupt(7, e))?,
        eta: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        expires: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_millis),
        created: Timestamp::from_millis(r.get(10)?),
        flow: match r.get::<_, Option<Vec<u8>>>(11)? {
            Some(bytes) => lovage_core::codec::from_msgpack(&bytes).map_err(|e| corrupt(11, e))?,
            None => Vec::new(),
        },
        // Used up when the task was queued (the `affinity` column, cleared when it is taken).
        affinity: None,
    })
}

/// A reserved row as an envelope, or what can be read of it when it does not decode. Only
/// SQLite's own errors (a missing column) fail the call.
pub(super) fn row_to_envelope_or_corrupt(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<std::result::Result<Envelope, CorruptMessage>> {
    match row_to_envelope(r) {
        Ok(env) => Ok(Ok(env)),
        Err(e) => {
            let text = |i: usize| r.get::<_, String>(i).unwrap_or_default();
            let raw_id = text(0);
            Ok(Err(CorruptMessage {
                id: raw_id.parse().ok(),
                raw_id,
                task: text(4),
                queue: text(1),
                attempts: r.get::<_, i64>(3).unwrap_or(0).max(0) as u32,
                args: r.get::<_, Vec<u8>>(6).unwrap_or_default(),
                reason: e.to_string(),
            }))
        }
    }
}

/// A dead letter from its columns: envelope and error (JSON), and when it died (ms).
pub(super) fn dead_letter(envelope: &str, error: &str, at: i64) -> Result<DeadLetter> {
    Ok(DeadLetter {
        envelope: serde_json::from_str(envelope)
            .map_err(|e| BrokerError::Corrupt(e.to_string()))?,
        error: serde_json::from_str(error).map_err(|e| BrokerError::Corrupt(e.to_string()))?,
        at: Timestamp::from_millis(at),
    })
}
