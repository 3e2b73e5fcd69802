//! Length-prefixed frames between a process pool and its children.
//!
//! A request asks a child to run one registered task on one or more argument sets (one for
//! `submit`, a chunk for `map`); the reply carries one outcome per argument set. All integers are
//! little-endian. Several requests go out in one `write`, so small tasks cost little.
//!
//! ```text
//! request: len u32 | kind u8 | seq u64 | codec u8 | name_len u16 | name | count u32 | (len u32, args)*
//! reply:   len u32 | seq u64 | count u32 | (status u8, len u32, bytes)* | spawns u32 | spawn*
//! spawn:   codec u8 | name_len u16 | name | keyed u8 | (key_len u16, key)? | len u32 | args
//! ```
//!
//! A call of kind `KIND_SCOPED_CALL` runs inside a [`ProcessScope`](super::scope::ProcessScope):
//! the tasks it spawns ride back in its reply, so they count in the scope exactly when the
//! call's outcome does (a child that dies mid-call spawned nothing).

use lovage_core::{Codec, TaskError};

/// One call's outcome as it crosses the pipe: encoded result bytes, or the task's error.
pub(crate) type Outcome = Result<Vec<u8>, TaskError>;

/// Request kinds.
pub(crate) const KIND_CALL: u8 = 1;
pub(crate) const KIND_INIT: u8 = 2;
pub(crate) const KIND_SCOPED_CALL: u8 = 3;

/// A task a scoped call spawned, as it crosses the pipe back to the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spawn {
    pub task: String,
    pub codec: Codec,
    /// Spawns with the same key run once per scope.
    pub key: Option<String>,
    pub args: Vec<u8>,
}

/// A decoded reply: the request it answers, one outcome per argument set, what it spawned.
#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub seq: u64,
    pub outcomes: Vec<Outcome>,
    pub spawns: Vec<Spawn>,
}

const STATUS_OK: u8 = 0;
const STATUS_ERR: u8 = 1;

/// Frames larger than this are refused as corrupt rather than allocated.
pub(crate) const MAX_FRAME: usize = 1 << 30;

fn codec_byte(c: Codec) -> u8 {
    match c {
        Codec::Json => 0,
        Codec::Msgpack => 1,
    }
}

fn byte_codec(b: u8) -> Result<Codec, FrameError> {
    match b {
        0 => Ok(Codec::Json),
        1 => Ok(Codec::Msgpack),
        other => Err(FrameError::UnknownCodec(other)),
    }
}

/// Appends one request frame to `out`.
pub(crate) fn encode_request(
    out: &mut Vec<u8>,
    kind: u8,
    seq: u64,
    codec: Codec,
    name: &str,
    args: &[Vec<u8>],
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(codec_byte(codec));
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        out.extend_from_slice(&(a.len() as u32).to_le_bytes());
        out.extend_from_slice(a);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A decoded request, borrowing from the frame body.
pub(crate) struct Request<'a> {
    pub kind: u8,
    pub seq: u64,
    pub codec: Codec,
    pub name: &'a str,
    pub args: Vec<&'a [u8]>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(FrameError::Truncated { at: self.pos })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// A frame that does not decode: the other side is not speaking this protocol (or a newer
/// version of it), or the pipe carried something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame truncated at byte {at}")]
    Truncated { at: usize },
    #[error("unknown codec byte {0}")]
    UnknownCodec(u8),
    #[error("task name: {0}")]
    TaskName(std::str::Utf8Error),
    #[error("unknown reply status {0}")]
    UnknownStatus(u8),
    #[error("spawn key: {0}")]
    SpawnKey(std::str::Utf8Error),
    #[error("unknown spawn key flag {0}")]
    UnknownKeyFlag(u8),
    #[error("{0} bytes after the end of a reply")]
    Trailing(usize),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

/// Decodes a request body (the bytes after the length prefix).
pub(crate) fn decode_request(body: &[u8]) -> Result<Request<'_>, FrameError> {
    let mut c = Cursor { buf: body, pos: 0 };
    let kind = c.u8()?;
    let seq = c.u64()?;
    let codec = byte_codec(c.u8()?)?;
    let name_len = c.u16()? as usize;
    let name = std::str::from_utf8(c.take(name_len)?).map_err(FrameError::TaskName)?;
    let count = c.u32()? as usize;
    // Room for no more entries than the body can hold (each takes at least its 4-byte length),
    // whatever count it claims.
    let mut args = Vec::with_capacity(count.min(c.remaining() / 4));
    for _ in 0..count {
        let n = c.u32()? as usize;
        args.push(c.take(n)?);
    }
    Ok(Request {
        kind,
        seq,
        codec,
        name,
        args,
    })
}

/// Appends one reply frame to `out`.
pub(crate) fn encode_reply(out: &mut Vec<u8>, seq: u64, outcomes: &[Outcome], spawns: &[Spawn]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(outcomes.len() as u32).to_le_bytes());
    for o in outcomes {
        let (status, bytes) = match o {
            Ok(v) => (STATUS_OK, std::borrow::Cow::Borrowed(v.as_slice())),
            Err(e) => (
                STATUS_ERR,
                std::borrow::Cow::Owned(Codec::Json.encode(e, "task error").unwrap_or_default()),
            ),
        };
        out.push(status);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&(spawns.len() as u32).to_le_bytes());
    for s in spawns {
        out.push(codec_byte(s.codec));
        out.extend_from_slice(&(s.task.len() as u16).to_le_bytes());
        out.extend_from_slice(s.task.as_bytes());
        match &s.key {
            Some(k) => {
                out.push(1);
                out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                out.extend_from_slice(k.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(s.args.len() as u32).to_le_bytes());
        out.extend_from_slice(&s.args);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes a reply body.
pub(crate) fn decode_reply(body: &[u8]) -> Result<Reply, FrameError> {
    let mut c = Cursor { buf: body, pos: 0 };
    let seq = c.u64()?;
    let count = c.u32()? as usize;
    // Each outcome takes at least 5 bytes (status and length).
    let mut outcomes = Vec::with_capacity(count.min(c.remaining() / 5));
    for _ in 0..count {
        let status = c.u8()?;
        let n = c.u32()? as usize;
        let bytes = c.take(n)?;
        outcomes.push(match status {
            STATUS_OK => Ok(bytes.to_vec()),
            STATUS_ERR => Err(Codec::Json
                .decode::<TaskError>(bytes, "task error")
                .unwrap_or_else(|e| e.into())),
            other => return Err(FrameError::UnknownStatus(other)),
        });
    }
    let count = c.u32()? as usize;
    // Each spawn takes at least 8 bytes (codec, name length, keyed, args length).
    let mut spawns = Vec::with_capacity(count.min(c.remaining() / 8));
    for _ in 0..count {
        let codec = byte_codec(c.u8()?)?;
        let name_len = c.u16()? as usize;
        let task = std::str::from_utf8(c.take(name_len)?).map_err(FrameError::TaskName)?;
        let key = match c.u8()? {
            0 => None,
            1 => {
                let n = c.u16()? as usize;
                let key = std::str::from_utf8(c.take(n)?).map_err(FrameError::SpawnKey)?;
                Some(key.to_owned())
            }
            other => return Err(FrameError::UnknownKeyFlag(other)),
        };
        let n = c.u32()? as usize;
        spawns.push(Spawn {
            task: task.to_owned(),
            codec,
            key,
            args: c.take(n)?.to_vec(),
        });
    }
    if c.remaining() != 0 {
        return Err(FrameError::Trailing(c.remaining()));
    }
    Ok(Reply {
        seq,
        outcomes,
        spawns,
    })
}

/// If `buf` starts with a whole frame, its body's range.
pub(crate) fn split_frame(buf: &[u8]) -> Result<Option<std::ops::Range<usize>>, FrameError> {
    let Some(&[a, b, c, d]) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, d]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok((buf.len() >= 4 + len).then_some(4..4 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(seq in any::<u64>(), name in "[a-z:._]{0,40}", args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..10)) {
            let mut buf = Vec::new();
            encode_request(&mut buf, KIND_CALL, seq, Codec::Msgpack, &name, &args);
            let body = split_frame(&buf).unwrap().unwrap();
            prop_assert_eq!(body.end, buf.len());
            let r = decode_request(&buf[body]).unwrap();
            prop_assert_eq!((r.kind, r.seq, r.codec, r.name), (KIND_CALL, seq, Codec::Msgpack, name.as_str()));
            prop_assert_eq!(r.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
        }

        #[test]
        fn replies_round_trip(
            seq in any::<u64>(),
            oks in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)), 0..10),
            spawned in proptest::collection::vec(("[a-z:._]{0,20}", proptest::option::of("[a-z0-9/ é]{0,20}"), proptest::collection::vec(any::<u8>(), 0..30), any::<bool>()), 0..6),
        ) {
            let outcomes: Vec<Result<Vec<u8>, TaskError>> = oks.iter().map(|o| o.clone().ok_or_else(|| TaskError::new("K", "m"))).collect();
            let spawns: Vec<Spawn> = spawned
                .into_iter()
                .map(|(task, key, args, json)| Spawn {
                    task,
                    codec: if json { Codec::Json } else { Codec::Msgpack },
                    key,
                    args,
                })
                .collect();
            let mut buf = Vec::new();
            encode_reply(&mut buf, seq, &outcomes, &spawns);
            let body = split_frame(&buf).unwrap().unwrap();
            let back = decode_reply(&buf[body.clone()]).unwrap();
            prop_assert_eq!(back, Reply { seq, outcomes, spawns });
            // A cut anywhere inside the body is an error, never a panic or a shorter reply.
            for cut in 0..body.len() {
                prop_assert!(decode_reply(&buf[body.start..body.start + cut]).is_err());
            }
        }
    }

    /// The fuzz targets' seeds (fuzz/corpus, written by fuzz/examples/seeds.rs) keep up with
    /// the format: each decodes whole (its first byte is the fuzzer's piece size).
    #[test]
    fn the_committed_fuzz_seeds_decode() {
        let seeds: [(&[u8], usize); 3] = [
            (
                include_bytes!("../../../../fuzz/corpus/pool_replies/replies"),
                2,
            ),
            (
                include_bytes!("../../../../fuzz/corpus/pool_replies/long"),
                1,
            ),
            (
                include_bytes!("../../../../fuzz/corpus/pool_replies/spawned"),
                1,
            ),
        ];
        for (seed, replies) in seeds {
            let mut stream = &seed[1..];
            assert_eq!(crate::fuzzing::read_replies(&mut stream).unwrap(), replies);
        }
        let scoped = include_bytes!("../../../../fuzz/corpus/pool_requests/scoped-call");
        let body = split_frame(&scoped[1..]).unwrap().unwrap();
        let r = decode_request(&scoped[1..][body]).unwrap();
        assert_eq!((r.kind, r.name), (KIND_SCOPED_CALL, "crawl.page"));
    }

    #[test]
    fn partial_and_corrupt_frames() {
        let mut buf = Vec::new();
        encode_request(&mut buf, KIND_CALL, 1, Codec::Json, "t", &[b"[1]".to_vec()]);
        assert!(split_frame(&buf[..buf.len() - 1]).unwrap().is_none());
        assert!(split_frame(&[255, 255, 255, 255]).is_err());
        assert!(decode_request(&buf[4..buf.len() - 2]).is_err());
    }
}
