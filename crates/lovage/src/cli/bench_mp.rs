//! `lovage bench mp`: `lovage::mp` between two processes — a Queue of small and of 1 MiB
//! messages, Pipe round trips, an uncontended Lock, and the seed's shared-array squares on four
//! processes — as a table and (with `--json`) one JSON object. `bench/compare/mp.py` runs the
//! same workloads with Python's `multiprocessing` beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lovage::mp::{Array, Connection, Event, Lock, Pipe, Process, Queue};
use serde_json::{json, Map, Value};

use super::output::{self, si, BenchReport, Table};

/// Takes `n` small messages, then sets `done`.
#[lovage::task(name = "lovage.mp.bench.drain")]
pub fn drain(q: Queue<u64>, n: u64, ready: Event, done: Event) -> u64 {
    ready.set();
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(q.get().unwrap_or(0));
    }
    done.set();
    sum
}

/// Takes `n` raw messages, then sets `done`.
#[lovage::task(name = "lovage.mp.bench.drain_bytes")]
pub fn drain_bytes(q: Queue<()>, n: u64, ready: Event, done: Event) -> u64 {
    ready.set();
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    for _ in 0..n {
        if q.get_bytes(&mut buf).is_err() {
            break;
        }
        bytes += buf.len() as u64;
    }
    done.set();
    bytes
}

/// Sends back every message until the pipe closes.
#[lovage::task(name = "lovage.mp.bench.echo")]
pub fn echo(conn: Connection<u64>) {
    while let Ok(v) = conn.recv() {
        if conn.send(&v).is_err() {
            break;
        }
    }
}

/// The seed's worker: squares of its quarter of the indices.
#[lovage::task(name = "lovage.mp.bench.squares")]
pub fn squares(a: Array<u64>, index: usize, parts: usize) {
    let n = a.len();
    let start = index * (n / parts);
    let end = if index + 1 < parts {
        (index + 1) * (n / parts)
    } else {
        n
    };
    if let Ok(mut chunk) = a.claim(start..end) {
        for (i, x) in chunk.iter_mut().enumerate() {
            let k = (start + i) as u64;
            *x = k * k;
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small (8-byte) messages through the queue per run.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// 1 MiB messages through the queue per run.
    #[arg(long, default_value_t = 2_000)]
    big: u64,
    /// Pipe round trips per run.
    #[arg(long, default_value_t = 200_000)]
    round_trips: u64,
    /// Uncontended lock acquire+release pairs per run.
    #[arg(long, default_value_t = 50_000_000)]
    locks: u64,
    /// Elements of the shared array the squares fill.
    #[arg(long, default_value_t = 1_000_000)]
    squares: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Small sizes, a second in all: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A child is started and ready before the clock starts: start-up is not what these measure
/// (except for squares, where it is part of the seed's program on both sides).
fn queue_small(n: u64) -> anyhow::Result<Duration> {
    let q: Queue<u64> = Queue::new()?;
    let (ready, done) = (Event::new()?, Event::new()?);
    let p = Process::spawn(drain::s(q.clone(), n, ready.clone(), done.clone()))?;
    if !ready.wait_timeout(Duration::from_secs(30)) {
        bail!("the consumer did not start");
    }
    let t = Instant::now();
    for i in 0..n {
        q.put(&i)?;
    }
    done.wait();
    let d = t.elapsed();
    if !p.join()?.success() {
        bail!("the consumer failed");
    }
    Ok(d)
}

fn queue_big(n: u64) -> anyhow::Result<Duration> {
    let q: Queue<()> = Queue::new()?;
    let (ready, done) = (Event::new()?, Event::new()?);
    let p = Process::spawn(drain_bytes::s(q.clone(), n, ready.clone(), done.clone()))?;
    if !ready.wait_timeout(Duration::from_secs(30)) {
        bail!("the consumer did not start");
    }
    let msg = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..n {
        q.put_bytes(&msg)?;
    }
    done.wait();
    let d = t.elapsed();
    if !p.join()?.success() {
        bail!("the consumer failed");
    }
    Ok(d)
}

fn pipe_round_trips(n: u64) -> anyhow::Result<Duration> {
    let (a, b) = Pipe::new::<u64>(true)?;
    let p = Process::spawn(echo::s(b))?;
    // The first round trip waits for the child to start.
    a.send(&0)?;
    a.recv_timeout(Duration::from_secs(30))?;
    let t = Instant::now();
    for i in 0..n {
        a.send(&i)?;
        if a.recv()? != i {
            bail!("the echo sent back another number");
        }
    }
    let d = t.elapsed();
    drop(a);
    if !p.join()?.success() {
        bail!("the echo child failed");
    }
    Ok(d)
}

fn lock_pairs(n: u64) -> anyhow::Result<Duration> {
    let lock = Lock::new()?;
    let t = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(lock.acquire()));
    }
    Ok(t.elapsed())
}

fn shared_squares(n: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let a = Array::<u64>::new(n)?;
    let ps = (0..4)
        .map(|i| Process::spawn(squares::s(a.clone(), i, 4)))
        .collect::<Result<Vec<_>, _>>()?;
    for p in ps {
        if !p.join()?.success() {
            bail!("a squares worker failed");
        }
    }
    let d = t.elapsed();
    let last = (n as u64).saturating_sub(1);
    if n > 0 && a.load(n - 1)? != last * last {
        bail!("the squares are wrong");
    }
    Ok(d)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runs = args.runs.max(1);
    let q = args.quick;
    let messages = if q {
        args.messages.min(20_000)
    } else {
        args.messages
    };
    let big = if q { args.big.min(20) } else { args.big };
    let round_trips = if q {
        args.round_trips.min(2_000)
    } else {
        args.round_trips
    };
    let locks = if q {
        args.locks.min(200_000)
    } else {
        args.locks
    };
    let n_squares = if q {
        args.squares.min(10_000)
    } else {
        args.squares
    };

    let progress = ProgressBar::new(5);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
            .context("progress template")?,
    );
    progress.enable_steady_tick(Duration::from_millis(120));

    let mut figures = Map::new();
    let mut table = Table::new(&[("workload", false), ("median", true), ("range", true)]);
    type Workload<'a> = (
        &'a str,
        &'a str,
        u64,
        f64,
        &'a str,
        Box<dyn Fn() -> anyhow::Result<Duration>>,
    );
    let workloads: Vec<Workload> = vec![
        (
            "queue_small_msgs_per_s",
            "Queue, 8-byte messages, 1 producer → 1 consumer",
            messages,
            1.0,
            "msg/s",
            Box::new(move || queue_small(messages)),
        ),
        (
            "queue_1mib_bytes_per_s",
            "Queue, 1 MiB messages",
            big,
            (1 << 20) as f64,
            "B/s",
            Box::new(move || queue_big(big)),
        ),
        (
            "pipe_round_trips_per_s",
            "Pipe round trips (u64 there and back)",
            round_trips,
            1.0,
            "/s",
            Box::new(move || pipe_round_trips(round_trips)),
        ),
        (
            "lock_pairs_per_s",
            "Lock acquire+release, uncontended",
            locks,
            1.0,
            "/s",
            Box::new(move || lock_pairs(locks)),
        ),
        (
            "squares_s",
            "shared-array squares, 4 processes (incl. start)",
            n_squares as u64,
            0.0,
            "s",
            Box::new(move || shared_squares(n_squares)),
        ),
    ];
    for (key, label, n, scale, unit, f) in workloads {
        progress.set_message(label.to_string());
        f().with_context(|| format!("{label} (warm-up)"))?;
        let mut values = Vec::with_capacity(runs);
        for _ in 0..runs {
            let d = f().with_context(|| label.to_string())?.as_secs_f64();
            // Rates, except for squares: its figure is the time the seed's program takes.
            values.push(if scale == 0.0 {
                d
            } else {
                n as f64 * scale / d
            });
        }
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        let med = median(values.clone());
        let fmt = |v: f64| {
            if scale == 0.0 {
                format!("{:.1} ms", v * 1e3)
            } else if unit == "B/s" {
                format!("{:.2} GB/s", v / 1e9)
            } else {
                format!("{} {unit}", si(v))
            }
        };
        figures.insert(key.into(), json!(med));
        figures.insert(format!("{key}_min"), json!(lo));
        figures.insert(format!("{key}_max"), json!(hi));
        table.row(vec![
            label.into(),
            fmt(med),
            format!("{} – {}", fmt(lo), fmt(hi)),
        ]);
        progress.inc(1);
    }
    progress.finish_and_clear();
    figures.insert("messages".into(), json!(messages));
    figures.insert("big_messages".into(), json!(big));
    figures.insert("round_trips".into(), json!(round_trips));
    figures.insert("locks".into(), json!(locks));
    figures.insert("squares".into(), json!(n_squares));
    figures.insert("runs".into(), json!(runs));
    output::select(args.json).bench(&BenchReport {
        title: format!(
            "lovage bench mp: 2 processes (squares: 4), median of {runs}{}",
            if q {
                " (--quick: smoke sizes, not a measurement)"
            } else {
                ""
            }
        ),
        tables: vec![table],
        spaced: true,
        figures: Value::Object(figures),
    });
    Ok(())
}
