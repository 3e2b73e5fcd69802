//! A tiny HTTP/1.1 client over a TcpStream, for tests: it sends exactly the bytes asked for
//! (malformed JSON, oversized bodies, any header), which a full client would not.

#![allow(dead_code, unused_imports)] // each test crate uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; fails the test with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client for one server address, with optional extra headers on every request.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            headers: Vec::new(),
        }
    }

    /// The same client sending `Authorization: Bearer token`.
    pub fn bearer(&self, token: &str) -> Client {
        self.with("authorization", &format!("Bearer {token}"))
    }

    /// The same client with one more header.
    pub fn with(&self, name: &str, value: &str) -> Client {
        let mut c = self.clone();
        c.headers.push((name.into(), value.into()));
        c
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    /// POST with a JSON body (sent as is, valid or not).
    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, Some(body.as_bytes()))
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
            self.addr
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        if let Some(b) = body {
            // The server may answer 413 and close before reading it all.
            let _ = s.write_all(b);
        }
        read_response(&mut BufReader::new(s))
    }
}

fn read_response(r: &mut impl BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body,
    }
}

/// An open event stream: `GET path` with `headers`, read as SSE.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
}

/// One SSE event as read: `id`, `event` and `data` fields.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Client {
    /// Opens an SSE stream (the answer's headers are read; events are read by `next`).
    pub fn events(&self, path: &str) -> EventStream {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
            self.addr
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim_end().is_empty() {
                break;
            }
        }
        EventStream { reader, status }
    }
}

impl EventStream {
    /// The next event (comments and keep-alives skipped); chunked framing lines are skipped
    /// too, as they never start with a field name this stream uses.
    pub fn next(&mut self) -> SseEvent {
        // Keep-alives reset the socket's read timeout, so a stream that never sends the
        // awaited event needs a deadline of its own to fail instead of hanging.
        let until = std::time::Instant::now() + Duration::from_secs(60);
        let mut ev = SseEvent::default();
        loop {
            assert!(
                std::time::Instant::now() < until,
                "no event within 60 s (got so far: {ev:?})"
            );
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("id:") {
                ev.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                ev.data.push_str(v.trim_start());
            } else if line.is_empty() && (!ev.event.is_empty() || !ev.data.is_empty()) {
                return ev;
            }
        }
    }
}
