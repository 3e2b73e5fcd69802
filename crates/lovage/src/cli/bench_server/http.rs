//! Just enough HTTP/1.1 for `lovage bench server` to time the server from outside: keep-alive
//! GETs with a `content-length` body, and an SSE reader that undoes chunked framing. The
//! server is the thing measured, so the client stays out of the way (no async runtime, no
//! parsing beyond what the figures need).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// One keep-alive connection for GETs.
pub struct Conn {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, reader: None }
    }

    /// GETs `path`; the status must be 200. Returns the body's length (the figures need no
    /// more). A connection the server closed is opened again once.
    pub fn get(&mut self, path: &str) -> anyhow::Result<usize> {
        match self.try_get(path) {
            Ok(n) => Ok(n),
            Err(_) => {
                self.reader = None;
                self.try_get(path)
            }
        }
    }

    fn try_get(&mut self, path: &str) -> anyhow::Result<usize> {
        if self.reader.is_none() {
            let s = TcpStream::connect(self.addr).context("connecting to the server")?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            s.set_nodelay(true)?;
            self.reader = Some(BufReader::new(s));
        }
        let r = self.reader.as_mut().context("no connection")?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.addr);
        r.get_mut().write_all(head.as_bytes())?;
        let (status, len, _) = read_head(r)?;
        let len = len.context("no content-length in the answer")?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        if status != 200 {
            bail!(
                "GET {path}: status {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(len)
    }
}

/// Reads a status line and headers: (status, content-length, chunked).
fn read_head(r: &mut impl BufRead) -> anyhow::Result<(u16, Option<usize>, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("the server closed the connection");
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let (mut len, mut chunked) = (None, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            return Ok((status, len, chunked));
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse().ok();
            } else if k == "transfer-encoding" {
                chunked = v.contains("chunked");
            }
        }
    }
}

/// What an SSE client saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Task events received.
    pub events: u64,
    /// Events whose seq was not one more than the one before (a gap or a repeat).
    pub out_of_order: u64,
    /// The newest seq received (set it to the seq before the first one expected).
    pub last_seq: u64,
    /// `lagged` events received.
    pub lagged: u64,
    /// Events the `lagged` notes said were skipped.
    pub missed: u64,
}

/// An open `text/event-stream` answer, read event by event.
pub struct Sse {
    reader: BufReader<TcpStream>,
    chunk_left: usize,
    line: Vec<u8>,
    state: Pending,
    /// Counts so far.
    pub seen: Seen,
}

impl Sse {
    /// Opens `path` (status 200 and a chunked body expected).
    pub fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Sse> {
        let s = TcpStream::connect(addr).context("connecting to the server")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::with_capacity(256 * 1024, s);
        let head =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
        reader.get_mut().write_all(head.as_bytes())?;
        let (status, _, chunked) = read_head(&mut reader)?;
        if status != 200 || !chunked {
            bail!("GET {path}: status {status} (chunked: {chunked})");
        }
        Ok(Sse {
            reader,
            chunk_left: 0,
            line: Vec::new(),
            state: Pending::default(),
            seen: Seen::default(),
        })
    }

    /// Sets how long one read waits before [`Sse::pump`] returns `Ok(false)`.
    pub fn timeout(&self, t: Duration) -> anyhow::Result<()> {
        Ok(self.reader.get_ref().set_read_timeout(Some(t))?)
    }

    /// Reads what has arrived and counts its events; `Ok(false)` when nothing came within the
    /// read timeout.
    pub fn pump(&mut self) -> anyhow::Result<bool> {
        if self.chunk_left == 0 {
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => bail!("the event stream ended"),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            if size.trim().is_empty() {
                // The CRLF after a chunk's data.
                return Ok(true);
            }
            self.chunk_left = usize::from_str_radix(size.trim(), 16)
                .with_context(|| format!("bad chunk size {size:?}"))?;
            if self.chunk_left == 0 {
                bail!("the event stream ended");
            }
        }
        let buf = match self.reader.fill_buf() {
            Ok(b) => b,
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            bail!("the event stream ended");
        }
        let n = buf.len().min(self.chunk_left);
        // Whole lines are read in place; only a line cut by the buffer's end is copied.
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(i);
            if self.line.is_empty() {
                field(&mut self.state, &mut self.seen, line);
            } else {
                self.line.extend_from_slice(line);
                let whole = std::mem::take(&mut self.line);
                field(&mut self.state, &mut self.seen, &whole);
            }
            rest = &tail[1..];
        }
        self.line.extend_from_slice(rest);
        self.reader.consume(n);
        self.chunk_left -= n;
        Ok(true)
    }
}

/// The fields of the event being read.
#[derive(Default)]
struct Pending {
    id: Option<u64>,
    lagged: bool,
    missed: u64,
}

fn field(p: &mut Pending, seen: &mut Seen, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        dispatch(std::mem::take(p), seen);
    } else if let Some(v) = line.strip_prefix(b"id:") {
        p.id = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok());
    } else if let Some(v) = line.strip_prefix(b"event:") {
        p.lagged = v.trim_ascii() == b"lagged";
    } else if let Some(v) = line.strip_prefix(b"data:") {
        if p.lagged {
            p.missed = serde_json::from_slice::<serde_json::Value>(v)
                .ok()
                .and_then(|v| v["missed"].as_u64())
                .unwrap_or(0);
        }
    }
}

fn dispatch(p: Pending, s: &mut Seen) {
    if p.lagged {
        s.lagged += 1;
        s.missed += p.missed;
    } else if let Some(seq) = p.id {
        if seq != s.last_seq + 1 {
            s.out_of_order += 1;
        }
        s.last_seq = seq;
        s.events += 1;
    }
}
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
