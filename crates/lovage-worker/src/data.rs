//! The worker's side of the data plane: large results stay here, and the result store gets a
//! [`ResultRef`] to them. Values live in memory up to a share of `memory_limit`
//! ([`KEPT_SHARE`]); past it, or once the process's resident memory passes
//! [`SPILL_RSS_SHARE`] of the limit, they are written to files in the worker's data directory
//! (which a reader on the same host opens directly).
//!
//! `memory_limit` is the worker's whole memory, as a Dask user expects of
//! `--memory-limit`: the kept values in memory, the working set of the tasks in hand (their
//! inputs read from kept values, decoded, and what they make) and the process itself. So
//! kept values get [`KEPT_SHARE`] of it, and the tasks in hand may have read at most
//! [`INPUT_SHARE`] of it in kept inputs (encoded bytes; decoded they take a few times that):
//! the fetcher hands a task whose inputs do not fit back to the broker for a moment
//! ([`DataStore::take_input_room`]) unless nothing else is in hand. A small HTTP/1.1 endpoint on std threads serves `GET /values/<key>` (with
//! `Range: bytes=a-b`) to anyone presenting the worker's token: readers on other hosts, or
//! ones whose file is not there. Values go when the worker does (its directory is removed).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lovage_broker::dataref::Lineage;
use lovage_broker::dataref::{content_hash, this_host};
use lovage_broker::{FetchError, ResultRef};
use lovage_core::Codec;

/// Results this large or larger stay with the worker by default (64 KiB).
pub const DEFAULT_THRESHOLD: usize = 64 << 10;

/// How the worker keeps large results (off unless [`WorkerConfig::data`](crate::WorkerConfig::data)
/// is set).
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Results of at least this many bytes stay with the worker.
    pub threshold: usize,
    /// The worker's memory (kept values, the tasks in hand, the process): kept values hold
    /// [`KEPT_SHARE`] of it in memory and spill to files past that, and past
    /// [`SPILL_RSS_SHARE`] of it in resident memory; tasks in hand read at most
    /// [`INPUT_SHARE`] of it in kept inputs.
    pub memory_limit: usize,
    /// Where spilled values go (a directory of the worker's own is made inside, and removed
    /// when the worker ends). The system's temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// Where the endpoint listens (`127.0.0.1:0`: a free port on loopback; use `0.0.0.0:0`
    /// or a host's address for readers on other hosts).
    pub bind: SocketAddr,
    /// The address put in references, when the bound one is not what others should dial
    /// (a wildcard bind, or a NAT).
    pub advertise: Option<String>,
    /// A graph node whose inputs are kept values is queued for the worker holding most of
    /// their bytes; another worker may steal it once this long has passed (an idle worker
    /// still helps a busy one, and a worker that is gone strands nothing).
    pub steal_after: std::time::Duration,
}

/// How long a graph node waits for the worker holding its inputs before another may take it
/// (200 ms by default).
pub const DEFAULT_STEAL_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            threshold: DEFAULT_THRESHOLD,
            memory_limit: 1 << 30,
            dir: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            steal_after: DEFAULT_STEAL_AFTER,
        }
    }
}

/// Of `memory_limit`, the share kept values may hold in memory (40%): the rest is the
/// working set of the tasks in hand and the process itself.
pub const KEPT_SHARE: (usize, usize) = (2, 5);

/// Of `memory_limit`, the encoded bytes of kept inputs the tasks in hand may have read (10%):
/// a task's inputs are held as JSON text, then as its arguments, then decoded (a frame's
/// Arrow IPC), so a running task takes about four times this.
pub const INPUT_SHARE: (usize, usize) = (1, 10);

/// Of `memory_limit`, the resident memory past which new values go to files whatever the
/// kept values' own count says (70%, Dask's `spill` threshold): the count does not see what
/// running tasks hold.
pub const SPILL_RSS_SHARE: (usize, usize) = (7, 10);

/// Of `memory_limit`, the resident memory past which the worker pauses (all of it): one task
/// runs at a time until it is below again (`pause.rs`). Dask pauses at 80%; here kept values
/// are already held to [`KEPT_SHARE`] and leave memory past [`SPILL_RSS_SHARE`], so a worker
/// at work sits near 80% by design, and pausing there measured 1.4-3.5x slower on the spill
/// benchmark with no lower peak (docs/benchmarks.md, 2026-12-05). Past the whole limit, it
/// is what stops two large tasks from growing at once.
pub const PAUSE_RSS_SHARE: (usize, usize) = (1, 1);

/// `share` of `limit` (without overflowing on a huge limit).
fn share(limit: usize, (num, den): (usize, usize)) -> usize {
    (limit as u128 * num as u128 / den as u128) as usize
}

/// The process's resident memory in bytes (`VmRSS`), where the system says it (Linux).
pub fn resident_bytes() -> Option<u64> {
    resident_field("VmRSS:")
}

/// The process's peak resident memory in bytes (`VmHWM`), where the system says it (Linux).
pub fn peak_resident_bytes() -> Option<u64> {
    resident_field("VmHWM:")
}

fn resident_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Makes glibc's allocator give freed memory back, for a process whose resident memory is
/// bounded (`lovage worker --data-plane`, whose `--memory-limit` is its whole memory): at
/// most 2 arenas (by default glibc makes up to 8 per core, one per thread that allocates
/// while another holds an arena; memory freed in one is not reused by the threads of another,
/// so a frame's buffers, made on a pool thread and freed on the finisher's or an endpoint
/// connection's, stay resident) and free memory at the top of the heap returned past 64 KiB
/// (Dask's nanny sets `MALLOC_TRIM_THRESHOLD_=65536` for the same reason). Measured on a
/// 1e6-group group-by over 1 GiB of Parquet with a 256 MiB limit, the rest of the bounds on:
/// peak resident 446–580 MiB without it, 262–307 MiB with (docs/benchmarks.md, 2026-12-04). Call it first thing, before threads
/// start; it does nothing on other systems. Setting `MALLOC_ARENA_MAX` or
/// `MALLOC_TRIM_THRESHOLD_` in the environment overrides it.
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets the allocator's parameters; no memory is touched.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 10) };
        }
    }
}

/// Where a kept value is.
#[derive(Clone)]
enum Kept {
    Memory(Arc<Vec<u8>>),
    File(PathBuf),
}

struct Values {
    by_key: HashMap<String, Kept>,
    in_memory: usize,
    /// The most `in_memory` has been.
    memory_peak: usize,
    /// Values written to files, and their bytes, since the worker started (freed ones too).
    spilled: u64,
    spilled_bytes: u64,
    /// Encoded bytes of kept inputs the tasks in hand have read (see `take_input_room`),
    /// the most they have been, and the most one task has read.
    inputs_in_hand: u64,
    inputs_peak: u64,
    inputs_largest: u64,
}

/// The values a worker keeps, and the endpoint serving them.
pub(crate) struct DataStore {
    config: DataConfig,
    worker: String,
    host: String,
    addr: String,
    /// The address the endpoint is bound to (what `stop` dials to wake it).
    bound: SocketAddr,
    token: String,
    dir: tempfile::TempDir,
    values: Mutex<Values>,
    stop: AtomicBool,
    /// Whether resident memory counts (`memory_pressed`): off only in this module's tests,
    /// whose small limits the test process itself passes.
    watch_rss: bool,
}

impl DataStore {
    /// Makes the data directory, binds the endpoint and starts its accept thread.
    pub fn start(config: DataConfig, worker: &str) -> std::io::Result<Arc<DataStore>> {
        Self::start_watching(config, worker, true)
    }

    fn start_watching(
        config: DataConfig,
        worker: &str,
        watch_rss: bool,
    ) -> std::io::Result<Arc<DataStore>> {
        let dir = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                tempfile::Builder::new()
                    .prefix("lovage-data-")
                    .tempdir_in(d)?
            }
            None => tempfile::Builder::new().prefix("lovage-data-").tempdir()?,
        };
        let listener = TcpListener::bind(config.bind)?;
        let bound = listener.local_addr()?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let store = Arc::new(DataStore {
            config,
            worker: worker.to_owned(),
            host: this_host(),
            addr,
            bound,
            token,
            dir,
            values: Mutex::new(Values {
                by_key: HashMap::new(),
                in_memory: 0,
                memory_peak: 0,
                spilled: 0,
                spilled_bytes: 0,
                inputs_in_hand: 0,
                inputs_peak: 0,
                inputs_largest: 0,
            }),
            stop: AtomicBool::new(false),
            watch_rss,
        });
        let s = store.clone();
        std::thread::Builder::new()
            .name("lovage-data".into())
            .spawn(move || s.accept_loop(listener))?;
        tracing::info!(worker = %store.worker, addr = %store.addr, dir = %store.dir.path().display(), "data endpoint listening");
        Ok(store)
    }

    /// The size from which results stay here.
    pub fn threshold(&self) -> usize {
        self.config.threshold
    }

    fn values(&self) -> MutexGuard<'_, Values> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the process's resident memory with `more` bytes on top passes
    /// [`SPILL_RSS_SHARE`] of the limit (never where the system does not say).
    fn memory_pressed(&self, more: usize) -> bool {
        self.resident_and(SPILL_RSS_SHARE)
            .is_some_and(|(rss, limit)| rss.saturating_add(more as u64) > limit)
    }

    /// The process's resident bytes and the [`PAUSE_RSS_SHARE`] of the limit, where the
    /// system says them and this store watches the process's memory.
    pub(crate) fn resident_and_pause_threshold(&self) -> Option<(u64, u64)> {
        self.resident_and(PAUSE_RSS_SHARE)
    }

    /// The process's resident bytes and `part` of the limit, where the system says them and
    /// this store watches the process's memory.
    fn resident_and(&self, part: (usize, usize)) -> Option<(u64, u64)> {
        if !self.watch_rss {
            return None;
        }
        let threshold = share(self.config.memory_limit, part) as u64;
        resident_bytes().map(|rss| (rss, threshold))
    }

    /// Books `need` bytes of kept inputs for a task about to read them; false when they do
    /// not fit [`INPUT_SHARE`] of the limit beside those of the tasks in hand (the task then
    /// waits in the broker). A task alone is always let through, however large its inputs:
    /// it could never run otherwise; so is any when `anyway` (a task in hand waits for
    /// others, which must be let run). Each `true` is matched by a
    /// [`give_input_room`](Self::give_input_room) when the task ends.
    pub fn take_input_room(&self, need: u64, anyway: bool) -> bool {
        let budget = share(self.config.memory_limit, INPUT_SHARE) as u64;
        let mut v = self.values();
        if !anyway && v.inputs_in_hand > 0 && v.inputs_in_hand.saturating_add(need) > budget {
            return false;
        }
        v.inputs_in_hand += need;
        v.inputs_peak = v.inputs_peak.max(v.inputs_in_hand);
        v.inputs_largest = v.inputs_largest.max(need);
        true
    }

    /// Whether the tasks in hand have read all the kept inputs [`INPUT_SHARE`] allows.
    pub fn inputs_full(&self) -> bool {
        let budget = share(self.config.memory_limit, INPUT_SHARE) as u64;
        let v = self.values();
        v.inputs_in_hand > 0 && v.inputs_in_hand >= budget
    }

    /// Gives back what [`take_input_room`](Self::take_input_room) booked.
    pub fn give_input_room(&self, need: u64) {
        let mut v = self.values();
        v.inputs_in_hand = v.inputs_in_hand.saturating_sub(need);
    }

    /// Keeps `value` under `key` (in memory if it fits under the limit, else in a file) and
    /// returns its reference; a file that cannot be written gives the value back with the error.
    pub fn keep(
        &self,
        key: &str,
        value: Vec<u8>,
        codec: Codec,
        lineage: Option<Lineage>,
        readers: u32,
    ) -> Result<ResultRef, (std::io::Error, Vec<u8>)> {
        let size = value.len();
        let hash = content_hash(&value);
        // Read before the lock: /proc costs a few microseconds.
        let pressed = self.memory_pressed(size);
        let fits = {
            let mut v = self.values();
            let fits =
                !pressed && v.in_memory + size <= share(self.config.memory_limit, KEPT_SHARE);
            if fits {
                v.in_memory += size;
                v.memory_peak = v.memory_peak.max(v.in_memory);
            }
            fits
        };
        if pressed {
            // What the count let stay in memory before must make room too.
            self.spill_memory();
        }
        let (kept, path) = if fits {
            (Kept::Memory(Arc::new(value)), None)
        } else {
            let path = self.dir.path().join(key);
            if let Err(e) = std::fs::write(&path, &value) {
                return Err((e, value));
            }
            let mut v = self.values();
            v.spilled += 1;
            v.spilled_bytes += size as u64;
            (Kept::File(path.clone()), Some(path.display().to_string()))
        };
        if let Some(Kept::Memory(old)) = self.values().by_key.insert(key.to_owned(), kept) {
            // The same task again (a retry that finished twice): the older copy goes.
            self.values().in_memory -= old.len();
        }
        Ok(ResultRef {
            worker: self.worker.clone(),
            host: self.host.clone(),
            addr: self.addr.clone(),
            key: key.to_owned(),
            path,
            token: self.token.clone(),
            size: size as u64,
            hash,
            codec,
            lineage,
            readers,
            everywhere: false,
            items: Vec::new(),
            item: None,
        })
    }

    /// Moves every value kept in memory to its file (the process's resident memory passed
    /// [`SPILL_RSS_SHARE`] of the limit). Readers holding one read on from their copy; later
    /// ones read the file (its reference, made while it was in memory, names no file, so
    /// readers on other hosts and this one alike ask the endpoint, which serves the file).
    pub(crate) fn spill_memory(&self) {
        let in_memory: Vec<(String, Arc<Vec<u8>>)> = self
            .values()
            .by_key
            .iter()
            .filter_map(|(k, v)| match v {
                Kept::Memory(bytes) => Some((k.clone(), bytes.clone())),
                Kept::File(_) => None,
            })
            .collect();
        for (key, bytes) in in_memory {
            // A name of its own: a retry keeping the same key meanwhile has the plain one.
            let path = self.dir.path().join(format!("{key}.moved"));
            if let Err(e) = std::fs::write(&path, &*bytes) {
                tracing::warn!(file = %path.display(), error = %e, "could not move a kept value to a file; it stays in memory");
                continue;
            }
            let mut v = self.values();
            match v.by_key.get(&key) {
                Some(Kept::Memory(now)) if Arc::ptr_eq(now, &bytes) => {
                    v.by_key.insert(key, Kept::File(path));
                    v.in_memory -= bytes.len();
                    v.spilled += 1;
                    v.spilled_bytes += bytes.len() as u64;
                }
                // Freed or replaced while it was written.
                _ => {
                    drop(v);
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Copies the value `r` stands for into this store under its key (a broadcast), fetched
    /// from its keeper; how many bytes were copied (0: it is here already).
    pub fn copy_in(&self, r: &ResultRef) -> Result<u64, String> {
        if self.get(&r.key).is_some() {
            return Ok(0);
        }
        let bytes = r.fetch().map_err(|e| e.to_string())?;
        let size = bytes.len() as u64;
        self.keep(&r.key, bytes, r.codec, None, 0)
            .map_err(|(e, _)| format!("keeping a copy of {}: {e}", r.key))?;
        Ok(size)
    }

    fn get(&self, key: &str) -> Option<Kept> {
        self.values().by_key.get(key).cloned()
    }

    /// The value `r` stands for, decoded, when this store holds it (this worker made it, or
    /// a broadcast copied it here): read in place, no fetch. `None` when it is not here (or
    /// its file cannot be read), so the caller fetches it.
    pub fn read_own(&self, r: &ResultRef) -> Option<Result<serde_json::Value, FetchError>> {
        let whole = match self.get(&r.key)? {
            Kept::Memory(bytes) => bytes,
            // An element of a spilled value: only its range is read (a shuffle's map value
            // holds every reducer's piece; reading it whole per reducer would hold them all).
            Kept::File(path) if r.item.is_some() => {
                let start = r.item.map_or(0, |i| i.start);
                let bytes = read_range(&path, start, r.size).ok()?;
                lovage_broker::dataref::note_read_locally(r.size);
                return Some(r.decode_value(&bytes));
            }
            Kept::File(path) => Arc::new(std::fs::read(path).ok()?),
        };
        // An element's reference (a shuffle's piece) reads its range of the value.
        let start = r.item.map_or(0, |i| i.start) as usize;
        let bytes = whole.get(start..start.checked_add(r.size as usize)?)?;
        if r.item.is_none() && bytes.len() != whole.len() {
            return None;
        }
        lovage_broker::dataref::note_read_locally(r.size);
        Some(r.decode_value(bytes))
    }

    /// Drops the value `key` (memory, or its file); false if it is not here.
    pub fn free(&self, key: &str) -> bool {
        let removed = {
            let mut v = self.values();
            let removed = v.by_key.remove(key);
            if let Some(Kept::Memory(m)) = &removed {
                v.in_memory -= m.len();
            }
            removed
        };
        match removed {
            None => false,
            Some(Kept::Memory(_)) => true,
            Some(Kept::File(p)) => {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove a freed value's file");
                }
                true
            }
        }
    }

    /// What is kept: values, bytes in memory, files and their bytes (as `GET /stats` says);
    /// and since the worker started: the most bytes kept in memory at once, values spilled to
    /// files and their bytes, the most bytes of kept inputs the tasks in hand held at once
    /// and the most one task read, the process's peak resident memory; and the limit with
    /// its shares (kept values, inputs in hand).
    pub fn stats(&self) -> serde_json::Value {
        let v = self.values();
        let files: Vec<&PathBuf> = v
            .by_key
            .values()
            .filter_map(|k| match k {
                Kept::File(p) => Some(p),
                Kept::Memory(_) => None,
            })
            .collect();
        let file_bytes: u64 = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        serde_json::json!({
            "values": v.by_key.len(),
            "memory_bytes": v.in_memory,
            "files": files.len(),
            "file_bytes": file_bytes,
            "memory_peak": v.memory_peak,
            "spilled": v.spilled,
            "spilled_bytes": v.spilled_bytes,
            "inputs_peak": v.inputs_peak,
            "inputs_largest": v.inputs_largest,
            "memory_limit": self.config.memory_limit,
            "kept_limit": share(self.config.memory_limit, KEPT_SHARE),
            "inputs_limit": share(self.config.memory_limit, INPUT_SHARE),
            "peak_resident_bytes": peak_resident_bytes(),
        })
    }

    /// Stops the endpoint and drops every value kept (memory and files): readers now get
    /// "unreachable".
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // The values go now, not when the last handle drops: the accept thread holds one and
        // may outlive the worker's return (a process exits without waiting for it), which
        // left spilled files behind for same-host readers to find.
        {
            let mut values = self.values();
            values.by_key.clear();
            values.in_memory = 0;
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir.path()) {
            tracing::warn!(dir = %self.dir.path().display(), error = %e, "could not remove the data directory");
        }
        // Wakes the accept loop (a wildcard bind is dialled on loopback).
        let mut a = self.bound;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let s = self.clone();
            // A thread per connection: readers are few (other workers and clients), and a
            // slow one must not hold up the rest.
            let spawned = std::thread::Builder::new()
                .name("lovage-data-conn".into())
                .spawn(move || {
                    if let Err(e) = s.serve(conn) {
                        tracing::debug!(error = %e, "data connection ended");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a data connection thread");
            }
        }
    }

    /// Answers one request.
    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut r = BufReader::new(conn.try_clone()?);
        let mut w = conn;
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (mut auth, mut range) = (None, None);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                break;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim().to_owned();
                if name.eq_ignore_ascii_case("authorization") {
                    auth = Some(value);
                } else if name.eq_ignore_ascii_case("range") {
                    range = Some(value);
                }
            }
        }
        if auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) != Some(self.token.as_str()) {
            return reply(&mut w, "401 Unauthorized", b"a wrong or missing token\n");
        }
        if (method, target) == ("GET", "/stats") {
            return reply(&mut w, "200 OK", self.stats().to_string().as_bytes());
        }
        let Some(key) = target.strip_prefix("/values/") else {
            return reply(&mut w, "404 Not Found", b"no such path\n");
        };
        match method {
            "GET" => {}
            "DELETE" if self.free(key) => return reply(&mut w, "200 OK", b"freed\n"),
            "DELETE" => return reply(&mut w, "404 Not Found", b"no such value\n"),
            _ => return reply(&mut w, "405 Method Not Allowed", b"GET or DELETE\n"),
        }
        let Some(kept) = self.get(key) else {
            return reply(
                &mut w,
                "404 Not Found",
                b"no such value (freed, or never here)\n",
            );
        };
        let size = match &kept {
            Kept::Memory(v) => v.len() as u64,
            Kept::File(p) => std::fs::metadata(p)?.len(),
        };
        let (start, end, status) = match range.as_deref().map(|r| parse_range(r, size)) {
            None => (0, size, "200 OK"),
            Some(Some((a, z))) => (a, z, "206 Partial Content"),
            Some(None) => {
                return reply(
                    &mut w,
                    "416 Range Not Satisfiable",
                    format!("the value has {size} bytes\n").as_bytes(),
                )
            }
        };
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            end - start
        )?;
        match kept {
            Kept::Memory(v) => w.write_all(&v[start as usize..end as usize])?,
            Kept::File(p) => {
                use std::io::Seek;
                let mut f = std::fs::File::open(p)?;
                f.seek(std::io::SeekFrom::Start(start))?;
                std::io::copy(&mut f.take(end - start), &mut w)?;
            }
        }
        w.flush()
    }
}

/// `len` bytes of the file at `path` from `start`.
fn read_range(path: &std::path::Path, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as a half-open `[start, end)` within `size`; `None`
/// when it is malformed or outside the value.
fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?.trim();
    let (a, z) = spec.split_once('-')?;
    let (start, end) = match (a.is_empty(), z.is_empty()) {
        (false, false) => (
            a.parse::<u64>().ok()?,
            z.parse::<u64>().ok()?.saturating_add(1),
        ),
        (false, true) => (a.parse().ok()?, size),
        (true, false) => (size.saturating_sub(z.parse().ok()?), size),
        (true, true) => return None,
    };
    let end = end.min(size);
    (start < end).then_some((start, end))
}

fn reply(w: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose kept values get `kept` bytes of memory (the limit's [`KEPT_SHARE`]);
    /// resident memory not watched.
    fn store(kept: usize) -> Arc<DataStore> {
        DataStore::start_watching(
            DataConfig {
                memory_limit: kept * KEPT_SHARE.1 / KEPT_SHARE.0,
                ..DataConfig::default()
            },
            "test@here.1",
            false,
        )
        .unwrap()
    }

    #[test]
    fn ranges_parse_as_http_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=-", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn a_value_in_memory_is_served_whole_and_by_range_over_http() {
        let s = store(1 << 20);
        let value: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let r = s.keep("k1", value.clone(), Codec::Json, None, 0).unwrap();
        assert_eq!(r.path, None, "under the limit it stays in memory");
        assert_eq!(r.fetch().unwrap(), value);
        assert_eq!(r.fetch_range(1000, 10).unwrap(), &value[1000..1010]);
        assert_eq!(r.fetch_range(99_995, 10).unwrap(), &value[99_995..]);
    }

    #[test]
    fn past_the_memory_limit_a_value_is_spilled_and_read_from_its_file() {
        let s = store(10);
        let r = s.keep("k2", vec![7u8; 5000], Codec::Json, None, 0).unwrap();
        let path = r.path.clone().expect("spilled");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
        assert_eq!(r.fetch().unwrap(), vec![7u8; 5000]);
        // Another host would ask the endpoint: it serves the file too.
        let mut elsewhere = r.clone();
        elsewhere.host = "another-host".into();
        assert_eq!(elsewhere.fetch().unwrap(), vec![7u8; 5000]);
    }

    #[test]
    fn a_freed_value_leaves_memory_and_its_file_goes() {
        let s = store(100);
        let in_memory = s.keep("m", vec![1u8; 50], Codec::Json, None, 1).unwrap();
        let in_file = s.keep("f", vec![2u8; 500], Codec::Json, None, 1).unwrap();
        let path = in_file.path.clone().expect("spilled");
        let stats = in_memory.store_stats().unwrap();
        assert_eq!(
            (stats["values"].as_u64(), stats["memory_bytes"].as_u64()),
            (Some(2), Some(50))
        );
        assert_eq!(
            (stats["files"].as_u64(), stats["file_bytes"].as_u64()),
            (Some(1), Some(500))
        );
        in_memory.free().unwrap();
        in_file.free().unwrap();
        assert!(!std::path::Path::new(&path).exists());
        let stats = in_file.store_stats().unwrap();
        let now: Vec<_> = ["values", "memory_bytes", "files", "file_bytes"]
            .map(|k| stats[k].as_u64())
            .into();
        assert_eq!(now, [Some(0); 4], "{stats}");
        // What went through stays counted: the most in memory, and what was spilled.
        let since: Vec<_> = ["memory_peak", "spilled", "spilled_bytes"]
            .map(|k| stats[k].as_u64())
            .into();
        assert_eq!(since, [Some(50), Some(1), Some(500)], "{stats}");
        let e = in_memory.fetch().unwrap_err().to_string();
        assert!(e.contains("404"), "{e}");
        assert!(in_memory.free().is_err(), "freeing twice says it is gone");
    }

    #[test]
    fn kept_values_get_their_share_of_the_limit_and_the_rest_spills() {
        let s = DataStore::start_watching(
            DataConfig {
                memory_limit: 1000,
                ..DataConfig::default()
            },
            "test@here.1",
            false,
        )
        .unwrap();
        // 40% of 1000: the first 300 bytes stay, the next 300 would pass 400.
        let a = s.keep("a", vec![1u8; 300], Codec::Json, None, 0).unwrap();
        let b = s.keep("b", vec![2u8; 300], Codec::Json, None, 0).unwrap();
        assert_eq!((a.path.is_none(), b.path.is_some()), (true, true));
        let stats = s.stats();
        assert_eq!(stats["memory_peak"], 300, "{stats}");
        assert_eq!(stats["spilled_bytes"], 300, "{stats}");
    }

    #[test]
    fn values_in_memory_move_to_files_and_are_still_served() {
        let s = store(1 << 20);
        let r = s.keep("m", vec![3u8; 1000], Codec::Json, None, 0).unwrap();
        assert_eq!(r.path, None);
        s.spill_memory();
        let stats = s.stats();
        assert_eq!(
            (stats["memory_bytes"].as_u64(), stats["files"].as_u64()),
            (Some(0), Some(1)),
            "{stats}"
        );
        assert_eq!(r.fetch().unwrap(), vec![3u8; 1000], "served from its file");
        assert!(s.free("m"));
        assert_eq!(s.stats()["files"], 0);
    }

    #[test]
    fn tasks_in_hand_read_at_most_their_share_of_the_limit_unless_alone() {
        let s = store(1000); // a limit of 2500: 250 bytes of inputs in hand
        assert!(s.take_input_room(200, false));
        assert!(!s.take_input_room(100, false), "200 + 100 passes 250");
        assert!(s.take_input_room(50, false));
        assert!(s.inputs_full());
        s.give_input_room(250);
        assert!(
            s.take_input_room(10_000, false),
            "alone, a task always runs"
        );
        assert!(!s.take_input_room(1, false));
        assert!(s.take_input_room(1, true), "let through while a task waits");
        s.give_input_room(10_001);
        assert!(s.take_input_room(1, false));
        assert!(!s.inputs_full());
    }

    #[test]
    fn an_element_of_a_spilled_value_is_read_in_place_by_its_range() {
        let s = store(0);
        let value = br#"["aaaa","bbbbbb"]"#.to_vec();
        let mut r = s.keep("l", value.clone(), Codec::Json, None, 0).unwrap();
        assert!(r.path.is_some(), "spilled");
        r.items = lovage_broker::dataref::json_array_items(&value).unwrap();
        let second = r.element(1).unwrap();
        let got = s.read_own(&second).unwrap().unwrap();
        assert_eq!(got, serde_json::json!("bbbbbb"));
    }

    #[test]
    fn a_wrong_token_or_unknown_key_is_refused() {
        let s = store(1 << 20);
        let mut r = s.keep("k3", vec![1u8; 10], Codec::Json, None, 0).unwrap();
        r.token = "guess".into();
        let e = r.fetch().unwrap_err().to_string();
        assert!(e.contains("401"), "{e}");
        let mut r = s.keep("k4", vec![1u8; 10], Codec::Json, None, 0).unwrap();
        r.key = "nothing-here".into();
        let e = r.fetch().unwrap_err().to_string();
        assert!(e.contains("404"), "{e}");
    }
}
