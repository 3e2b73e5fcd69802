//! The data plane's pointer. A result larger than a worker's threshold stays in that worker's
//! store (memory, or a file once its memory limit is passed); the result store keeps only a
//! [`ResultRef`] in the record's value: who holds it, where, how big, and a hash to check it.
//!
//! A reader on the same host reads the spilled file directly; any other reader (or one whose
//! file is not there) asks the worker's HTTP endpoint, with the worker's token, for the whole
//! value or a byte range. [`ResultRecord::outcome`](crate::ResultRecord::outcome) resolves a
//! reference by itself, so clients see the value as if it had been stored inline.
//!
//! On the wire a reference is [`REF_MAGIC`] followed by its JSON. No JSON or MessagePack
//! encoding of a single value starts with a NUL byte followed by more bytes, so a stored value
//! is never mistaken for one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lovage_core::Codec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a stored value that is a reference starts with.
pub const REF_MAGIC: &[u8] = b"\0lovage-ref\0";

/// Bytes of kept values this process has fetched (files and endpoints), for tests and
/// metrics: what the data plane moved into this process.
static FETCHED: AtomicU64 = AtomicU64::new(0);

/// How many bytes of kept values this process has fetched so far.
pub fn bytes_fetched() -> u64 {
    FETCHED.load(Ordering::Relaxed)
}

/// Bytes of kept values this process read from its own worker's store (no fetch: the value
/// was made here, or copied here by a broadcast), for tests and metrics.
static READ_LOCALLY: AtomicU64 = AtomicU64::new(0);

/// How many bytes of kept values this process has read from its own store so far.
pub fn bytes_read_locally() -> u64 {
    READ_LOCALLY.load(Ordering::Relaxed)
}

/// Counts `n` bytes read from this process's own store (see [`bytes_read_locally`]).
pub fn note_read_locally(n: u64) {
    READ_LOCALLY.fetch_add(n, Ordering::Relaxed);
}

/// How long a fetch waits to connect, and for each read.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a value kept by a worker is, and how to check it once fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRef {
    /// The worker holding it (`name@host.pid`).
    pub worker: String,
    /// The host it runs on (as `/proc/sys/kernel/hostname` names it).
    pub host: String,
    /// `ip:port` of the worker's data endpoint.
    pub addr: String,
    /// The value's key in the worker's store (the task id).
    pub key: String,
    /// The file it was spilled to, if it was: readable directly on the same host.
    pub path: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; the endpoint refuses a request without it.
    pub token: String,
    /// Its length in bytes.
    pub size: u64,
    /// [`content_hash`] of its bytes.
    pub hash: u64,
    /// How the bytes are encoded (the producing task's codec).
    #[serde(default)]
    pub codec: Codec,
    /// The task that made it, to make it again if its worker is lost (absent when the task's
    /// arguments were too large to record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// How many releases free it: its graph dependents, plus one for the client when it is
    /// what a caller waits for. 0: not counted (kept until its worker stops).
    #[serde(default)]
    pub readers: u32,
    /// A copy is in every live worker's store (a broadcast, see
    /// [`Scattered::broadcast`](crate::futures::Scattered::broadcast)): a worker holding one
    /// reads its own, and no task is queued for this reference's worker on its account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everywhere: bool,
    /// Where each element of the value (a JSON array) lies in its bytes, when its readers
    /// take elements (a graph's `getitem` nodes): each element is then a reference of its
    /// own ([`ResultRef::element`]), and a reader fetches only its bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemSpan>,
    /// Set when this reference stands for one element of the kept value (not the whole):
    /// which, and where its bytes start. `size` and `hash` are then the element's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<ItemOf>,
}

/// One element's bytes within a kept value (a JSON array).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSpan {
    /// Its first byte's offset.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// [`content_hash`] of its bytes.
    pub hash: u64,
}

/// Which element of a kept value a reference stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOf {
    /// Its index in the array (to take it from the value made again by the lineage).
    pub index: u32,
    /// Its first byte's offset in the kept value.
    pub start: u64,
}

/// The internal control command that has a worker copy a kept value into its own store (a
/// broadcast); its argument is `{"ref": <the reference>}`. Not among the commands operators
/// send ([`CONTROL_COMMANDS`](crate::ops::CONTROL_COMMANDS)).
pub const REPLICATE_COMMAND: &str = "lovage.replicate";

/// The call that produced a kept value: enough to run it again elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The registered task's name.
    pub task: String,
    /// Its arguments, decoded (they are encoded again with [`ResultRef::codec`] to run it);
    /// they may hold references themselves.
    pub args: Value,
}

/// The key of the one-entry object that stands for a kept value inside a task's arguments or
/// a workflow's value (`{"lovage.ref": {...}}`): a dependent's arguments carry the reference,
/// and the worker running it puts the value in its place.
pub const REF_KEY: &str = "lovage.ref";

/// Why a referenced value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The stored reference itself does not decode.
    #[error("a stored result reference does not decode: {0}")]
    BadRef(String),
    /// Neither the file nor the endpoint answered.
    #[error("fetching {key} from worker {worker} at {addr}: {reason}")]
    Unreachable {
        /// The value's key.
        key: String,
        /// Its worker.
        worker: String,
        /// The endpoint.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The worker answered, but not with the value (it was freed, or the token is wrong).
    #[error("worker {worker} at {addr} answered {status} for {key}")]
    Refused {
        /// The value's key.
        key: String,
        /// Its worker.
        worker: String,
        /// The endpoint.
        addr: String,
        /// The HTTP status line's code and reason.
        status: String,
    },
    /// The bytes read are not the value referenced (wrong length or hash).
    #[error("the value {key} read from {from} is damaged: {reason}")]
    Damaged {
        /// The value's key.
        key: String,
        /// The file or endpoint read.
        from: String,
        /// Length or hash mismatch.
        reason: String,
    },
}

impl ResultRef {
    /// The reference as stored in a result record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = REF_MAGIC.to_vec();
        // A struct of strings and integers always serializes.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// `None` if `bytes` is an inline value; else the reference, or why it does not decode.
    pub fn decode(bytes: &[u8]) -> Option<Result<ResultRef, FetchError>> {
        let json = bytes.strip_prefix(REF_MAGIC)?;
        Some(serde_json::from_slice(json).map_err(|e| FetchError::BadRef(e.to_string())))
    }

    /// The reference as it stands inside arguments or a workflow's value.
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::with_capacity(1);
        m.insert(
            REF_KEY.to_owned(),
            serde_json::to_value(self).unwrap_or(Value::Null),
        );
        Value::Object(m)
    }

    /// The reference `v` stands for, if it is one (an object whose only key is [`REF_KEY`]
    /// and whose value decodes as a reference).
    pub fn from_value(v: &Value) -> Option<ResultRef> {
        match v {
            Value::Object(m) if m.len() == 1 => {
                serde_json::from_value(m.get(REF_KEY)?.clone()).ok()
            }
            _ => None,
        }
    }

    /// The fetched value decoded into a JSON value (from the producing task's codec).
    pub fn fetch_value(&self) -> Result<Value, FetchError> {
        let bytes = self.fetch()?;
        self.decode_value(&bytes)
    }

    /// `bytes` (this reference's value) decoded with its codec.
    pub fn decode_value(&self, bytes: &[u8]) -> Result<Value, FetchError> {
        self.codec
            .decode::<Value>(bytes, "a kept value")
            .map_err(|e| FetchError::Damaged {
                key: self.key.clone(),
                from: self.addr.clone(),
                reason: e.to_string(),
            })
    }

    /// The reference to element `index` of this value, when the value is indexed per element
    /// ([`ResultRef::items`]): the same key, worker and lineage, only that element's bytes.
    pub fn element(&self, index: u32) -> Option<ResultRef> {
        let span = *self.items.get(index as usize)?;
        Some(ResultRef {
            size: span.len,
            hash: span.hash,
            items: Vec::new(),
            item: Some(ItemOf {
                index,
                start: span.start,
            }),
            ..self.clone()
        })
    }

    /// The whole value (or, for an element's reference, that element's bytes alone): from
    /// the spilled file on this host if it is there, else from the worker's endpoint (a
    /// range request for an element). Checked against the size and hash either way.
    pub fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        if let Some(item) = self.item {
            if let Some(path) = self.local_path() {
                if let Some(bytes) = read_file_range(path, item.start, self.size) {
                    return self.checked(bytes, path);
                }
            }
            let last = (item.start + self.size).saturating_sub(1);
            let bytes = self.http_get(Some((item.start, last)))?;
            return self.checked(bytes, &self.addr);
        }
        if let Some(path) = self.local_path() {
            if let Ok(bytes) = std::fs::read(path) {
                return self.checked(bytes, path);
            }
        }
        let bytes = self.http_get(None)?;
        self.checked(bytes, &self.addr)
    }

    /// `len` bytes from `start` (fewer at the end of the value), from the file on this host or
    /// the endpoint's range request. Not hash-checked (a range is not the whole value).
    pub fn fetch_range(&self, start: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let end = start.saturating_add(len).min(self.size);
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(path) = self.local_path() {
            if let Ok(mut f) = std::fs::File::open(path) {
                use std::io::Seek;
                let mut buf = vec![0u8; (end - start) as usize];
                if f.seek(std::io::SeekFrom::Start(start)).is_ok() && f.read_exact(&mut buf).is_ok()
                {
                    FETCHED.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    return Ok(buf);
                }
            }
        }
        let buf = self.http_get(Some((start, end - 1)))?;
        FETCHED.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf)
    }

    /// The spilled file, if the value has one and this process runs on the same host.
    fn local_path(&self) -> Option<&str> {
        self.path.as_deref().filter(|_| self.host == this_host())
    }

    fn checked(&self, bytes: Vec<u8>, from: &str) -> Result<Vec<u8>, FetchError> {
        FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let damaged = |reason: String| FetchError::Damaged {
            key: self.key.clone(),
            from: from.to_owned(),
            reason,
        };
        if bytes.len() as u64 != self.size {
            return Err(damaged(format!(
                "{} bytes where {} were stored",
                bytes.len(),
                self.size
            )));
        }
        let hash = content_hash(&bytes);
        if hash != self.hash {
            return Err(damaged(format!(
                "hash {hash:016x} where {:016x} was stored",
                self.hash
            )));
        }
        Ok(bytes)
    }

    /// `GET /values/<key>` (with an inclusive byte range if given) over one HTTP/1.1
    /// connection; the body of a 200 or 206 answer.
    fn http_get(&self, range: Option<(u64, u64)>) -> Result<Vec<u8>, FetchError> {
        let path = format!("/values/{}", self.key);
        self.http("GET", &path, range)
    }

    /// Frees the value in its worker's store (memory and file): `DELETE /values/<key>`.
    pub fn free(&self) -> Result<(), FetchError> {
        let path = format!("/values/{}", self.key);
        self.http("DELETE", &path, None).map(|_| ())
    }

    /// What the worker holding it keeps (`GET /stats`, JSON: `values`, `memory_bytes`,
    /// `files`, `file_bytes`).
    pub fn store_stats(&self) -> Result<Value, FetchError> {
        let body = self.http("GET", "/stats", None)?;
        serde_json::from_slice(&body).map_err(|e| FetchError::BadRef(e.to_string()))
    }

    /// One request over its own HTTP/1.1 connection; the body of a 2xx answer.
    fn http(
        &self,
        method: &str,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, FetchError> {
        let unreachable = |reason: String| FetchError::Unreachable {
            key: self.key.clone(),
            worker: self.worker.clone(),
            addr: self.addr.clone(),
            reason,
        };
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("bad address: {e}")))?
            .next()
            .ok_or_else(|| unreachable("the address resolves to nothing".into()))?;
        let mut stream = TcpStream::connect_timeout(&addr, FETCH_TIMEOUT)
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(FETCH_TIMEOUT))
            .map_err(|e| unreachable(e.to_string()))?;
        let range = range
            .map(|(a, z)| format!("Range: bytes={a}-{z}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{range}Connection: close\r\n\r\n",
            self.addr, self.token
        )
        .map_err(|e| unreachable(format!("send: {e}")))?;
        let mut r = BufReader::with_capacity(1 << 16, stream);
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| unreachable(format!("read status: {e}")))?;
        let status = line
            .trim_end()
            .split_once(' ')
            .map(|(_, s)| s.to_owned())
            .unwrap_or_default();
        let mut length: Option<usize> = None;
        loop {
            line.clear();
            r.read_line(&mut line)
                .map_err(|e| unreachable(format!("read headers: {e}")))?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok();
                }
            }
        }
        if !status.starts_with('2') {
            return Err(FetchError::Refused {
                key: self.key.clone(),
                worker: self.worker.clone(),
                addr: self.addr.clone(),
                status,
            });
        }
        let length = length.ok_or_else(|| unreachable("no Content-Length".into()))?;
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)
            .map_err(|e| unreachable(format!("read body: {e}")))?;
        Ok(body)
    }
}

/// `len` bytes of the file at `path` from `start`; `None` if it cannot be read.
fn read_file_range(path: &str, start: u64, len: u64) -> Option<Vec<u8>> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(std::io::SeekFrom::Start(start)).ok()?;
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Where each element of `bytes` lies when they are a JSON array (surrounding whitespace
/// allowed), with each element's hash; `None` when they are not one.
pub fn json_array_items(bytes: &[u8]) -> Option<Vec<ItemSpan>> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut i = bytes.iter().position(|b| !is_space(b))?;
    if bytes[i] != b'[' {
        return None;
    }
    i += 1;
    let mut spans = Vec::new();
    // Depth inside the top-level array, whether inside a string, and the element's start.
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut start: Option<usize> = None;
    let mut end_of_last = None;
    let push = |from: usize, to: usize, spans: &mut Vec<ItemSpan>| {
        let (a, z) = (from, to);
        spans.push(ItemSpan {
            start: a as u64,
            len: (z - a) as u64,
            hash: content_hash(&bytes[a..z]),
        });
    };
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
                end_of_last = Some(i + 1);
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                start.get_or_insert(i);
                in_str = true;
            }
            b'[' | b'{' => {
                start.get_or_insert(i);
                depth += 1;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                end_of_last = Some(i + 1);
            }
            b',' | b']' if depth == 0 => {
                if let (Some(a), Some(z)) = (start.take(), end_of_last.take()) {
                    push(a, z, &mut spans);
                } else if b == b',' {
                    return None;
                }
                if b == b']' {
                    return bytes[i + 1..].iter().all(is_space).then_some(spans);
                }
            }
            _ if is_space(&b) => {}
            _ => {
                // A number, `true`, `false` or `null`: ends at the next delimiter.
                start.get_or_insert(i);
                end_of_last = Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

/// The value `bytes` stands for: itself if inline, else the referenced value fetched.
pub fn resolve(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, FetchError> {
    match ResultRef::decode(bytes) {
        None => Ok(std::borrow::Cow::Borrowed(bytes)),
        Some(r) => Ok(std::borrow::Cow::Owned(r?.fetch()?)),
    }
}

/// One reader of `r` is done with it (a dependent finished for good, or a client let its
/// future go): counted in the result store, and the value is freed in its worker when the
/// last of its [`ResultRef::readers`] is. A reference not counted (`readers == 0`) is left.
pub fn release(results: &dyn crate::ResultStore, r: &ResultRef) {
    if r.readers == 0 {
        return;
    }
    let counter = format!("lovage-ref-done:{}", r.key);
    match results.incr(&counter, 1) {
        Ok(n) if n >= i64::from(r.readers) => {
            if let Err(e) = r.free() {
                tracing::debug!(key = %r.key, error = %e, "freeing a kept value");
            }
            let _ = results.incr(&counter, -n);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(key = %r.key, error = %e, "counting a kept value's readers"),
    }
}

/// Every reference inside `v` (not inside the values they stand for).
pub fn refs_in(v: &Value, out: &mut Vec<ResultRef>) {
    if let Some(r) = ResultRef::from_value(v) {
        out.push(r);
        return;
    }
    match v {
        Value::Array(items) => items.iter().for_each(|i| refs_in(i, out)),
        Value::Object(m) => m.values().for_each(|i| refs_in(i, out)),
        _ => {}
    }
}

/// The worker holding most bytes of the values referenced inside `values` (references nested
/// in them counted, not what they stand for), and how many: where a task reading them runs
/// without moving them. `None` when they reference nothing. Ties go to the first worker met.
pub fn heaviest_holder<'a>(values: impl IntoIterator<Item = &'a Value>) -> Option<(String, u64)> {
    let mut refs = Vec::new();
    for v in values {
        refs_in(v, &mut refs);
    }
    let mut by_worker: Vec<(String, u64)> = Vec::new();
    for r in refs.into_iter().filter(|r| !r.everywhere) {
        match by_worker.iter_mut().find(|(w, _)| *w == r.worker) {
            Some((_, bytes)) => *bytes += r.size,
            None => by_worker.push((r.worker, r.size)),
        }
    }
    // `max_by_key` keeps the last of equal maxima; reversed, that is the first met.
    by_worker.into_iter().rev().max_by_key(|(_, bytes)| *bytes)
}

/// Whether encoded arguments or a value may hold references (a cheap byte search for
/// [`REF_KEY`]; a false positive only costs a decode).
pub fn may_hold_refs(bytes: &[u8]) -> bool {
    let key = REF_KEY.as_bytes();
    bytes.len() >= key.len() && bytes.windows(key.len()).any(|w| w == key)
}

/// Puts in place of every reference inside `v` the value `fetch` gives for it (nested
/// references included, since a fetched value may hold some); how many it replaced.
pub fn resolve_value(
    v: &mut Value,
    fetch: &mut dyn FnMut(&ResultRef) -> Result<Value, FetchError>,
) -> Result<usize, FetchError> {
    if let Some(r) = ResultRef::from_value(v) {
        let mut got = fetch(&r)?;
        let n = resolve_value(&mut got, fetch)?;
        *v = got;
        return Ok(n + 1);
    }
    let mut n = 0;
    match v {
        Value::Array(items) => {
            for item in items {
                n += resolve_value(item, fetch)?;
            }
        }
        Value::Object(m) => {
            for item in m.values_mut() {
                n += resolve_value(item, fetch)?;
            }
        }
        _ => {}
    }
    Ok(n)
}

/// `bytes` (encoded with `codec`) with every reference inside replaced by its fetched value,
/// encoded again; the bytes themselves (borrowed) when they hold none.
pub fn resolve_encoded(
    bytes: &[u8],
    codec: Codec,
) -> Result<std::borrow::Cow<'_, [u8]>, FetchError> {
    if !may_hold_refs(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let bad = |reason: String| FetchError::BadRef(reason);
    let mut v: Value = codec
        .decode(bytes, "a value holding references")
        .map_err(|e| bad(e.to_string()))?;
    if resolve_value(&mut v, &mut |r| r.fetch_value())? == 0 {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let out = codec
        .encode(&v, "a value with its references resolved")
        .map_err(|e| bad(e.to_string()))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// A stored value read in full: a reference fetched, and any reference inside resolved.
pub fn resolve_all(bytes: &[u8], codec: Codec) -> Result<std::borrow::Cow<'_, [u8]>, FetchError> {
    use std::borrow::Cow;
    let top = resolve(bytes)?;
    let inner = match resolve_encoded(&top, codec)? {
        Cow::Borrowed(_) => None,
        Cow::Owned(v) => Some(v),
    };
    Ok(match inner {
        Some(v) => Cow::Owned(v),
        None => top,
    })
}

/// This host's name, as workers record it in their references.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// A 64-bit integrity hash (not cryptographic: it catches a truncated or mixed-up file, not
/// an attacker, whom the token keeps out): eight bytes at a time, multiply-xor mixed.
pub fn content_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    // Four independent lanes so the multiplies overlap.
    let mut lanes = [K, K ^ 1, K ^ 2, K ^ 3];
    let mut words = bytes.chunks_exact(32);
    for block in &mut words {
        for (k, lane) in lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[k * 8..k * 8 + 8]);
            *lane = (*lane ^ u64::from_le_bytes(w))
                .wrapping_mul(K)
                .rotate_left(29);
        }
    }
    let mut h = bytes.len() as u64;
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(K).rotate_left(31);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResultRef {
        ResultRef {
            worker: "w@h.1".into(),
            host: "h".into(),
            addr: "127.0.0.1:1".into(),
            key: "k".into(),
            path: None,
            token: "t".into(),
            size: 3,
            hash: content_hash(b"abc"),
            codec: Codec::Json,
            lineage: None,
            readers: 0,
            everywhere: false,
            items: Vec::new(),
            item: None,
        }
    }

    #[test]
    fn the_heaviest_holder_is_the_worker_with_most_input_bytes() {
        let on = |worker: &str, size: u64| {
            let mut r = sample();
            r.worker = worker.into();
            r.size = size;
            r
        };
        // A's two values outweigh B's one; references nested in a collection count too.
        let inputs = vec![
            on("b", 100).to_value(),
            serde_json::json!([on("a", 60).to_value(), 7]),
            serde_json::json!({"x": on("a", 50).to_value()}),
        ];
        assert_eq!(heaviest_holder(&inputs), Some(("a".into(), 110)));
        // Ties go to the first worker met.
        let tie = vec![on("b", 10).to_value(), on("a", 10).to_value()];
        assert_eq!(heaviest_holder(&tie), Some(("b".into(), 10)));
        // A broadcast value is everywhere: it queues the task for nobody.
        let mut everywhere = on("a", 1000);
        everywhere.everywhere = true;
        let inputs = vec![everywhere.to_value(), on("b", 1).to_value()];
        assert_eq!(heaviest_holder(&inputs), Some(("b".into(), 1)));
        assert_eq!(heaviest_holder(&[serde_json::json!("inline")]), None);
    }

    #[test]
    fn a_json_array_is_indexed_and_an_element_read_alone() {
        let value = br#" [ "ab\"c,]" , 12, {"x": [1, "]"]}, null,[] ] "#;
        let spans = json_array_items(value).unwrap();
        let texts: Vec<&[u8]> = spans
            .iter()
            .map(|s| &value[s.start as usize..(s.start + s.len) as usize])
            .collect();
        let want: [&[u8]; 5] = [
            br#""ab\"c,]""#,
            b"12",
            br#"{"x": [1, "]"]}"#,
            b"null",
            b"[]",
        ];
        assert_eq!(texts, want);
        assert!(json_array_items(b"{\"a\": 1}").is_none());
        assert!(json_array_items(b"[1, 2").is_none());
        assert_eq!(json_array_items(b"[]").unwrap(), vec![]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, value).unwrap();
        let mut r = sample();
        r.host = this_host();
        r.path = Some(path.display().to_string());
        r.size = value.len() as u64;
        r.hash = content_hash(value);
        r.items = spans;
        let third = r.element(2).unwrap();
        assert_eq!(third.fetch().unwrap(), want[2]);
        assert_eq!(third.item.unwrap().index, 2);
        assert!(r.element(5).is_none());
        std::fs::write(&path, value.to_ascii_uppercase()).unwrap();
        assert!(matches!(third.fetch(), Err(FetchError::Damaged { .. })));
    }

    #[test]
    fn a_reference_round_trips_and_an_inline_value_is_not_one() {
        let r = sample();
        assert_eq!(ResultRef::decode(&r.encode()).unwrap().unwrap(), r);
        assert!(ResultRef::decode(b"[1,2,3]").is_none());
        assert!(ResultRef::decode(&[0x00]).is_none());
        let mut bad = REF_MAGIC.to_vec();
        bad.extend(b"{not json");
        assert!(matches!(
            ResultRef::decode(&bad),
            Some(Err(FetchError::BadRef(_)))
        ));
    }

    #[test]
    fn the_hash_sees_length_order_and_every_byte() {
        let a: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut b = a.clone();
        b[999] ^= 1;
        assert_ne!(content_hash(&a), content_hash(&b));
        b = a.clone();
        b[3] ^= 0x80;
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a[..999]), content_hash(&a));
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }

    #[test]
    fn a_same_host_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, b"abc").unwrap();
        let mut r = sample();
        r.host = this_host();
        r.path = Some(path.display().to_string());
        assert_eq!(r.fetch().unwrap(), b"abc");
        assert_eq!(r.fetch_range(1, 10).unwrap(), b"bc");
        std::fs::write(&path, b"abd").unwrap();
        let e = r.fetch().unwrap_err();
        assert!(matches!(e, FetchError::Damaged { .. }), "{e}");
    }

    #[test]
    fn an_unreachable_worker_is_named_in_the_error() {
        let mut r = sample();
        // A port nothing listens on: bind one, then drop it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        r.addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = r.fetch().unwrap_err().to_string();
        assert!(e.contains("w@h.1") && e.contains(&r.addr), "{e}");
    }
}
