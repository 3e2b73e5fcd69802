//! The event phase: events published into the broker's stream as workers publish them (in
//! batches), read by the server and fanned out to SSE clients that keep up, beside one client
//! that reads nothing until the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lovage::App;
use lovage_broker::ops::{Event, EventKind};

use super::http::{Seen, Sse};
use crate::cli::procs::RssSampler;

/// Events per published batch (a busy worker's finisher publishes batches of this order).
const BATCH: usize = 500;

/// What the phase measured.
#[derive(Debug)]
pub struct Fanout {
    /// The publishing rate asked for (0: unpaced).
    pub rate: u64,
    /// Events published.
    pub events: u64,
    /// Events per second the publisher wrote into the broker.
    pub publish_per_s: f64,
    /// Events per second from the first publish until the last client that keeps up had
    /// every event.
    pub delivered_per_s: f64,
    /// What each client that keeps up saw.
    pub clients: Vec<Seen>,
    /// What the stalled client saw once it read its stream at the end.
    pub stalled: Seen,
    /// The server's peak resident memory during the phase, KiB.
    pub server_peak_rss_kib: u64,
}

impl Fanout {
    /// Events the clients that keep up did not get, summed over them (a gap, a repeat or a
    /// `lagged` note each count too).
    pub fn lost(&self) -> u64 {
        self.clients
            .iter()
            .map(|s| (self.events - s.events.min(self.events)) + s.out_of_order + s.lagged)
            .sum()
    }
}

/// Publishes `n` events at `rate` per second (0: as fast as the broker takes them) while
/// `clients` SSE clients read them and one stalls.
pub fn run(
    app: &App,
    addr: SocketAddr,
    server_pid: u32,
    n: u64,
    rate: u64,
    clients: usize,
) -> anyhow::Result<Fanout> {
    let base = app
        .backend()
        .events()
        .read_events(u64::MAX - 1, 1)
        .context("reading the event stream's end")?
        .last_seq;
    // Resuming from `base` makes a client's stream start exactly after it, however the
    // subscription races the first publish.
    let path = format!("/api/v1/events?last_event_id={base}");
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut s = Sse::open(addr, &path)?;
        s.seen.last_seq = base;
        streams.push(s);
    }
    let mut stalled = Sse::open(addr, &path)?;
    stalled.seen.last_seq = base;

    let sampler = RssSampler::start(vec![server_pid]);
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let failed = failed.clone();
            std::thread::spawn(move || -> anyhow::Result<(Seen, Instant)> {
                let mut idle = Instant::now();
                while s.seen.last_seq < base + n && s.seen.lagged == 0 {
                    if failed.load(Ordering::Relaxed) {
                        bail!("the publisher failed");
                    }
                    if s.pump()? {
                        idle = Instant::now();
                    } else if idle.elapsed() > Duration::from_secs(30) {
                        bail!(
                            "no event for 30 s after seq {} of {}",
                            s.seen.last_seq - base,
                            n
                        );
                    }
                }
                Ok((s.seen, Instant::now()))
            })
        })
        .collect();

    let publisher = {
        let app = app.clone();
        std::thread::spawn(move || -> anyhow::Result<Duration> {
            let t = Instant::now();
            let mut left = n;
            while left > 0 {
                if rate > 0 {
                    // Paced as workers would publish: the next batch when it is due.
                    let due = Duration::from_secs_f64((n - left) as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let k = left.min(BATCH as u64);
                let batch: Vec<Event> = (0..k).map(event).collect();
                app.backend()
                    .events()
                    .publish(&batch)
                    .context("publishing events")?;
                left -= k;
            }
            Ok(t.elapsed())
        })
    };
    let published = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"));
    let published = match published.and_then(|r| r) {
        Ok(t) => t,
        Err(e) => {
            failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let mut seen = Vec::with_capacity(clients);
    let mut last = start;
    for r in readers {
        let (s, at) = r
            .join()
            .map_err(|_| anyhow::anyhow!("an SSE reader panicked"))??;
        last = last.max(at);
        seen.push(s);
    }
    let delivered = last - start;
    let server_peak_rss_kib = sampler.finish();

    // The stalled client now reads what was buffered for it, until its `lagged` note (or
    // everything, had its buffer been enough).
    stalled.timeout(Duration::from_millis(500))?;
    let until = Instant::now() + Duration::from_secs(30);
    while stalled.seen.lagged == 0 && stalled.seen.last_seq < base + n && Instant::now() < until {
        if !stalled.pump()? && stalled.seen.events > 0 {
            // Nothing more buffered and no `lagged`: it stays as it is.
            break;
        }
    }
    Ok(Fanout {
        rate,
        events: n,
        publish_per_s: n as f64 / published.as_secs_f64(),
        delivered_per_s: n as f64 / delivered.as_secs_f64(),
        clients: seen,
        stalled: stalled.seen,
        server_peak_rss_kib,
    })
}

/// A `task-succeeded` event as a worker writes one.
fn event(i: u64) -> Event {
    let mut e = Event::new(EventKind::TaskSucceeded);
    e.task_id = Some(lovage::TaskId::new());
    e.name = Some(
        if i % 2 == 0 {
            "bench.alpha"
        } else {
            "bench.beta"
        }
        .into(),
    );
    e.queue = Some(format!("seed-{}", i % 4));
    e.worker = Some("bench@localhost.1".into());
    e.state = Some(lovage::TaskState::Success);
    e.runtime_ms = Some(i % 50);
    e.retries = Some(0);
    e
}
