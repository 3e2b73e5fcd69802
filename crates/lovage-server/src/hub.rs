//! What the server keeps in memory, all of it bounded: the broker's event stream fanned out to
//! SSE clients through one broadcast ring, counters for `/metrics`, and ring buffers of
//! throughput for the dashboard's charts. Nothing per task: state is read from the broker.
//!
//! One poller reads the broker's stream for every client (a client costs no broker reads); a
//! sampler reads the broker's counters every few seconds for the charts. Both start with the
//! first request, inside whatever runtime serves the router.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use lovage_broker::ops::{Event, EventKind};
use lovage_broker::{App, BrokerError, Timestamp};
use tokio::sync::broadcast;

/// Events the broadcast ring holds: a client further behind than this gets `lagged`. The ring
/// is shared (one slot per event, not per client), so it is sized for the poller's bursts: at
/// 100,000 events/s a `POLL` gathers 5,000.
pub const CLIENT_BUFFER: usize = 8192;
/// How often the poller reads the broker's stream when it is idle (shorter: smaller bursts
/// into the ring, at the cost of an indexed read of the stream's tail).
const POLL: Duration = Duration::from_millis(50);
/// How often the sampler reads the counters (the finest chart step).
pub const SAMPLE: Duration = Duration::from_secs(5);
/// Points per chart range.
pub const POINTS: usize = 180;
/// (task, queue) pairs with series of their own in `/metrics` (counts by state, runtime and
/// queue-wait histograms); events of further pairs are folded into `("(other)", "(other)")`,
/// so a flood of task names or queues costs at most this many series sets.
pub const MAX_SERIES: usize = 500;
/// Upper bounds of the runtime histogram's buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
/// Upper bounds of the queue-wait histogram's buckets, in seconds (waits run longer).
pub const WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// The `state` label of `lovage_tasks_total` for each task event, in [`Series::states`] order.
pub const STATE_LABELS: [(EventKind, &str); 8] = [
    (EventKind::TaskSent, "sent"),
    (EventKind::TaskReceived, "received"),
    (EventKind::TaskStarted, "started"),
    (EventKind::TaskSucceeded, "succeeded"),
    (EventKind::TaskFailed, "failed"),
    (EventKind::TaskRetried, "retried"),
    (EventKind::TaskRevoked, "revoked"),
    (EventKind::TaskRejected, "rejected"),
];

/// One chart point: finished tasks in one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Start of the step, ms since the epoch.
    pub t: i64,
    /// SUCCESS in the step.
    pub succeeded: u64,
    /// FAILURE in the step.
    pub failed: u64,
}

/// A ring of points, each `step` long.
#[derive(Debug)]
struct Ring {
    step_ms: i64,
    points: VecDeque<Point>,
}

impl Ring {
    fn new(step: Duration) -> Ring {
        Ring {
            step_ms: step.as_millis() as i64,
            points: VecDeque::with_capacity(POINTS),
        }
    }

    fn add(&mut self, now: i64, succeeded: u64, failed: u64) {
        let t = now - now.rem_euclid(self.step_ms);
        match self.points.back_mut() {
            Some(p) if p.t == t => {
                p.succeeded += succeeded;
                p.failed += failed;
            }
            _ => {
                if self.points.len() == POINTS {
                    self.points.pop_front();
                }
                self.points.push_back(Point {
                    t,
                    succeeded,
                    failed,
                });
            }
        }
    }
}

/// A histogram over 12 buckets ([`BUCKETS`] or [`WAIT_BUCKETS`]).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Cumulative counts per bucket.
    pub buckets: [u64; BUCKETS.len()],
    /// All observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64; 12], seconds: f64) {
        for (b, le) in self.buckets.iter_mut().zip(bounds) {
            if seconds <= *le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Adds `other`'s observations (kept over the same bounds).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// The `q` quantile (0 to 1) in seconds, estimated from the buckets as Prometheus'
    /// `histogram_quantile` does: linear within the bucket it falls in, and the highest bound
    /// when it falls past them. `None` before any observation.
    pub fn quantile(&self, bounds: &[f64; 12], q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let (mut below, mut lower) = (0u64, 0.0);
        for (n, upper) in self.buckets.iter().zip(bounds) {
            if *n as f64 >= rank && *n > below {
                let within = (rank - below as f64) / (*n - below) as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            (below, lower) = (*n, *upper);
        }
        Some(lower)
    }
}

/// An event as the fan-out carries it: with its SSE frame encoded once, for every client.
#[derive(Debug)]
pub struct Fanned {
    /// The event, for clients' filters.
    pub event: Event,
    /// `id: seq`, `event: type`, `data: {json}` and the blank line that ends it.
    pub frame: Bytes,
}

impl Fanned {
    /// Encodes `event`'s frame.
    pub fn new(event: Event) -> Fanned {
        let frame = sse_frame(&event);
        Fanned { event, frame }
    }
}

/// One event as Server-Sent Events text (its JSON has no newline, so one `data:` line).
pub fn sse_frame(e: &Event) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.seq,
        e.kind.as_str()
    ))
}

/// What `/metrics` keeps for one (task, queue), from the events seen since the server started.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Task events by kind, in [`STATE_LABELS`] order.
    pub states: [u64; STATE_LABELS.len()],
    /// Run time of finished attempts ([`BUCKETS`]).
    pub runtime: Histogram,
    /// From sending (the time in the task's id) to the start of the attempt that finished
    /// ([`WAIT_BUCKETS`]); a retried task's wait includes its earlier attempts.
    pub wait: Histogram,
}

/// The bounded in-memory part of the server.
#[derive(Debug)]
pub struct Hub {
    started: AtomicBool,
    tx: broadcast::Sender<Arc<Fanned>>,
    /// The newest seq the poller has read (0: none yet).
    pub last_seq: AtomicU64,
    /// SSE clients connected now.
    pub sse_clients: AtomicU64,
    /// Times a client fell behind by more than its buffer.
    pub lagged_total: AtomicU64,
    /// Whether the broker has an event stream (false: it answered Unsupported).
    pub events_supported: AtomicBool,
    /// Set once the poller knows where the stream ends: from then on `last_seq` is the seq up
    /// to which every event was fanned out, and everything after it will be.
    pub polling: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    events_total: HashMap<EventKind, u64>,
    series: HashMap<(String, String), Series>,
    charts: [Ring; 3],
    last_counts: Option<(u64, u64)>,
}

/// The chart ranges: 15 min in 5 s steps, 1 h in 20 s, 24 h in 8 min.
pub const RANGES: [(&str, Duration); 3] = [
    ("15m", Duration::from_secs(5)),
    ("1h", Duration::from_secs(20)),
    ("24h", Duration::from_secs(480)),
];

impl Default for Hub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CLIENT_BUFFER);
        Hub {
            started: AtomicBool::new(false),
            tx,
            last_seq: AtomicU64::new(0),
            sse_clients: AtomicU64::new(0),
            lagged_total: AtomicU64::new(0),
            events_supported: AtomicBool::new(true),
            polling: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                events_total: HashMap::new(),
                series: HashMap::new(),
                charts: RANGES.map(|(_, step)| Ring::new(step)),
                last_counts: None,
            }),
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the poller and the sampler once, on the current tokio runtime.
    pub fn ensure_started(self: &Arc<Self>, app: &App) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.started.store(false, Ordering::Release);
            return;
        };
        rt.spawn(poll(self.clone(), app.clone()));
        rt.spawn(sample(self.clone(), app.clone()));
    }

    /// Waits (up to a few seconds) until the poller knows where the stream ends.
    pub async fn wait_polling(&self) {
        for _ in 0..250 {
            if self.polling.load(Ordering::Acquire)
                || !self.events_supported.load(Ordering::Acquire)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A receiver of every event read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Fanned>> {
        self.tx.subscribe()
    }

    /// Events seen by type, since the server started.
    pub fn events_total(&self) -> Vec<(EventKind, u64)> {
        let mut v: Vec<_> = self
            .lock()
            .events_total
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort_by_key(|(k, _)| k.as_str());
        v
    }

    /// Counts and histograms by (task, queue), from the task events seen.
    pub fn series(&self) -> Vec<((String, String), Series)> {
        let mut v: Vec<_> = self
            .lock()
            .series
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The chart for `range` (`15m`, `1h`, `24h`): its step and points, oldest first.
    pub fn chart(&self, range: &str) -> Option<(Duration, Vec<Point>)> {
        let i = RANGES.iter().position(|(r, _)| *r == range)?;
        let inner = self.lock();
        Some((
            RANGES[i].1,
            inner.charts[i].points.iter().copied().collect(),
        ))
    }

    fn record(&self, events: &[Event]) {
        let mut inner = self.lock();
        for e in events {
            *inner.events_total.entry(e.kind).or_insert(0) += 1;
            let Some(state) = STATE_LABELS.iter().position(|(k, _)| *k == e.kind) else {
                continue;
            };
            let mut key = (
                e.name.clone().unwrap_or_default(),
                e.queue.clone().unwrap_or_default(),
            );
            if !inner.series.contains_key(&key) && inner.series.len() >= MAX_SERIES {
                key = ("(other)".into(), "(other)".into());
            }
            let series = inner.series.entry(key).or_default();
            series.states[state] += 1;
            if matches!(e.kind, EventKind::TaskSucceeded | EventKind::TaskFailed) {
                if let Some(ms) = e.runtime_ms {
                    series.runtime.observe(&BUCKETS, ms as f64 / 1000.0);
                    if let Some(id) = e.task_id {
                        let started = e.ts.as_millis() - ms as i64;
                        let sent = lovage_broker::ops::sent_of(id).as_millis();
                        let wait = (started - sent).max(0) as f64 / 1000.0;
                        series.wait.observe(&WAIT_BUCKETS, wait);
                    }
                }
            }
        }
    }

    /// Adds a sample of the broker's finished counters to the charts.
    fn sample(&self, now: i64, succeeded: u64, failed: u64) {
        let mut inner = self.lock();
        if let Some((s0, f0)) = inner.last_counts {
            let (ds, df) = (succeeded.saturating_sub(s0), failed.saturating_sub(f0));
            for ring in &mut inner.charts {
                ring.add(now, ds, df);
            }
        }
        inner.last_counts = Some((succeeded, failed));
    }
}

async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&App) -> Result<T, BrokerError> + Send + 'static,
) -> Option<Result<T, BrokerError>> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app)).await.ok()
}

/// Reads the broker's event stream and fans it out; starts at its end (clients that want
/// history read it from the broker themselves, by Last-Event-ID).
async fn poll(hub: Arc<Hub>, app: App) {
    let mut after = match blocking(&app, |a| a.backend().events().read_events(0, 1)).await {
        Some(Ok(b)) => b.last_seq,
        Some(Err(BrokerError::Unsupported { .. })) => {
            hub.events_supported.store(false, Ordering::Release);
            return;
        }
        _ => 0,
    };
    hub.last_seq.store(after, Ordering::Release);
    hub.polling.store(true, Ordering::Release);
    loop {
        let read = blocking(&app, move |a| a.backend().events().read_events(after, 1000)).await;
        let batch = match read {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the event stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            None => return,
        };
        let full = batch.events.len() >= 1000;
        if batch.last_seq < after {
            // The stream was recreated (a new broker file): follow it from its end.
            after = batch.last_seq;
        }
        hub.record(&batch.events);
        for e in batch.events {
            after = after.max(e.seq);
            // No receiver is fine: nobody is watching.
            let _ = hub.tx.send(Arc::new(Fanned::new(e)));
        }
        hub.last_seq.store(after, Ordering::Release);
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Samples the broker's counters (or, without them, the workers' own totals) for the charts.
async fn sample(hub: Arc<Hub>, app: App) {
    let mut tick = tokio::time::interval(SAMPLE);
    loop {
        tick.tick().await;
        let counts = blocking(&app, |a| match a.backend().inspect().task_counts() {
            Ok(c) => Ok((c.succeeded, c.failed)),
            Err(BrokerError::Unsupported { .. }) => {
                let ws = a.workers(lovage_broker::WORKER_RECORD_TTL)?;
                Ok((ws.iter().map(|w| w.tasks_done).sum(), 0))
            }
            Err(e) => Err(e),
        })
        .await;
        if let Some(Ok((s, f))) = counts {
            hub.sample(Timestamp::now().as_millis(), s, f);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_are_estimated_within_their_bucket() {
        let mut h = super::Histogram::default();
        assert_eq!(h.quantile(&super::BUCKETS, 0.5), None);
        // 0.3 s, 0.4 s: the (0.25, 0.5] bucket; 30 s: the (10, 60] one.
        for s in [0.3, 0.4, 0.4, 30.0] {
            h.observe(&super::BUCKETS, s);
        }
        let p50 = h.quantile(&super::BUCKETS, 0.5).unwrap();
        assert!((p50 - (0.25 + 0.25 * 2.0 / 3.0)).abs() < 1e-9, "{p50}");
        let p95 = h.quantile(&super::BUCKETS, 0.95).unwrap();
        assert!(p95 > 10.0 && p95 <= 60.0, "{p95}");
        h.observe(&super::BUCKETS, 500.0);
        assert_eq!(
            h.quantile(&super::BUCKETS, 1.0),
            Some(60.0),
            "past the last bound"
        );
        let mut m = super::Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!((m.count, m.buckets[6]), (10, 6));
    }

    use super::*;

    #[test]
    fn rings_stay_bounded_and_sum_within_a_step() {
        let mut r = Ring::new(Duration::from_secs(5));
        r.add(10_000, 1, 0);
        r.add(12_000, 2, 1);
        assert_eq!(r.points.len(), 1);
        assert_eq!((r.points[0].succeeded, r.points[0].failed), (3, 1));
        for i in 0..1000 {
            r.add(20_000 + i * 5000, 1, 0);
        }
        assert_eq!(r.points.len(), POINTS);
    }

    #[test]
    fn histogram_series_are_capped() {
        let hub = Hub::default();
        let events: Vec<Event> = (0..MAX_SERIES + 50)
            .map(|i| {
                let mut e = Event::new(EventKind::TaskSucceeded);
                e.name = Some(format!("t{i}"));
                e.runtime_ms = Some(30);
                e
            })
            .collect();
        hub.record(&events);
        let r = hub.series();
        assert_eq!(r.len(), MAX_SERIES + 1);
        let other = &r.iter().find(|(k, _)| k.0 == "(other)").unwrap().1;
        assert_eq!(other.runtime.count, 50);
        assert_eq!(other.runtime.buckets[3], 50); // 0.03 s <= 0.05
        assert_eq!(other.runtime.buckets[2], 0); // not <= 0.025
        assert_eq!(other.states[3], 50); // succeeded
    }

    #[test]
    fn queue_wait_is_from_the_id_s_send_time_to_the_attempt_s_start() {
        let hub = Hub::default();
        let id = lovage_core::TaskId::new();
        let sent = lovage_broker::ops::sent_of(id).as_millis();
        let mut e = Event::new(EventKind::TaskSucceeded);
        e.task_id = Some(id);
        e.name = Some("t".into());
        e.queue = Some("q".into());
        // Started 2 s after it was sent, ran 0.5 s.
        e.ts = Timestamp::from_millis(sent + 2500);
        e.runtime_ms = Some(500);
        hub.record(&[e]);
        let s = &hub.series()[0].1;
        assert!((s.wait.sum - 2.0).abs() < 1e-9, "{}", s.wait.sum);
        // 2 s: not within 1 s, within 5 s.
        assert_eq!((s.wait.buckets[4], s.wait.buckets[5]), (0, 1));
    }
}
