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
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a stored value that is a reference starts with.
pub const REF_MAGIC: &[u8] = b"\0lovage-ref\0";

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
}

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

    /// The whole value: from the spilled file on this host if it is there, else from the
    /// worker's endpoint. Checked against the size and hash either way.
    pub fn fetch(&self) -> Result<Vec<u8>, FetchError> {
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
                    return Ok(buf);
                }
            }
        }
        self.http_get(Some((start, end - 1)))
    }

    /// The spilled file, if the value has one and this process runs on the same host.
    fn local_path(&self) -> Option<&str> {
        self.path.as_deref().filter(|_| self.host == this_host())
    }

    fn checked(&self, bytes: Vec<u8>, from: &str) -> Result<Vec<u8>, FetchError> {
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
            "GET /values/{} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{range}Connection: close\r\n\r\n",
            self.key, self.addr, self.token
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
        if !(status.starts_with("200") || status.starts_with("206")) {
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

/// The value `bytes` stands for: itself if inline, else the referenced value fetched.
pub fn resolve(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, FetchError> {
    match ResultRef::decode(bytes) {
        None => Ok(std::borrow::Cow::Borrowed(bytes)),
        Some(r) => Ok(std::borrow::Cow::Owned(r?.fetch()?)),
    }
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
        }
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
