//! `lovage bench collections`: the three collection workloads, each beside its
//! yardstick in the same run: the mean of random float64s (against a hand-written loop on as
//! many threads doing the same arithmetic), a word count over generated text, a fold of ints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use lovage::array::{random_fill, seed_of, Array};
use lovage::bag::{read_text, Bag};
use lovage::graph::{Broker, Graph, Processes, Scheduler, Threads};
use lovage::ThreadPool;
use serde_json::json;

use super::output::{self, BenchReport, Table};
use super::procs::{bench_broker, BenchBroker, WorkerProcesses};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Random float64 values whose mean is taken.
    #[arg(long, default_value_t = 1_000_000_000)]
    elements: usize,
    /// Values per array chunk.
    #[arg(long, default_value_t = 10_000_000)]
    chunk: usize,
    /// Megabytes of generated text for the word count.
    #[arg(long, default_value_t = 1024)]
    text_mb: usize,
    /// Bytes per word-count partition (byte ranges cut at newlines).
    #[arg(long, default_value_t = 32 << 20)]
    blocksize: usize,
    /// Integers folded.
    #[arg(long, default_value_t = 10_000_000)]
    fold: usize,
    /// Partitions of the folded bag.
    #[arg(long, default_value_t = 16)]
    fold_partitions: usize,
    /// Threads (lovage's pool and the hand-written loop alike).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Timed runs of each workload (the median is shown, with the range).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the generated text (kept between runs: regenerated only if its size
    /// differs); a temporary directory when not given.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Small sizes (1e7 values, 16 MB of text, 1e6 ints, 1 run): a smoke test.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
    /// Also take the array mean on these schedulers, alternating with the threads run and
    /// each other: `processes` (a process pool of `--workers`), `sqlite` and `redis`
    /// (`--workers` `lovage worker` processes of one slot each on a temporary SQLite file /
    /// on `--redis`, under a fresh key prefix). Comma-separated.
    #[arg(long, value_delimiter = ',')]
    array_on: Vec<ArrayOn>,
    /// Also take the word count on these schedulers (as `--array-on`, started after the array
    /// runs): a bag from `read_text` is data, so its partitions' tasks read their byte ranges
    /// in the pool's children or the workers (same host) and only the counts travel.
    #[arg(long, value_delimiter = ',')]
    wordcount_on: Vec<ArrayOn>,
    /// The Redis server for `--array-on redis` and `--wordcount-on redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Mostly the array mean: the word count and the fold shrink to 1 MB of text and 1,000
    /// ints (their rows are then not figures).
    #[arg(long)]
    array_only: bool,
}

/// Where else the array mean runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrayOn {
    Processes,
    Sqlite,
    Redis,
}

impl ArrayOn {
    fn label(self) -> &'static str {
        match self {
            ArrayOn::Processes => "processes",
            ArrayOn::Sqlite => "sqlite",
            ArrayOn::Redis => "redis",
        }
    }
}

/// A scheduler the array mean also runs on, with what it keeps alive.
enum Other {
    Pool(lovage::ProcessPool),
    Broker {
        client: lovage::Client,
        // Stopped (and the temporary SQLite file removed) when dropped; on Redis the run's
        // records expire by the store's TTL under their fresh prefix.
        _workers: WorkerProcesses,
        _broker: BenchBroker,
    },
}

impl Other {
    fn start(on: ArrayOn, workers: usize, redis: &str) -> anyhow::Result<Other> {
        let url = match on {
            ArrayOn::Processes => {
                let pool = lovage::ProcessPool::builder()
                    .workers(workers)
                    .build()
                    .context("starting the process pool")?;
                return Ok(Other::Pool(pool));
            }
            ArrayOn::Sqlite => None,
            ArrayOn::Redis => {
                let prefix = format!("lovage-bench-coll-{}", lovage::TaskId::new());
                let sep = if redis.contains('?') { '&' } else { '?' };
                Some(format!("{redis}{sep}prefix={prefix}"))
            }
        };
        let broker = bench_broker(url.as_deref())?;
        let mut w = WorkerProcesses::start(workers, &broker.url, &["--concurrency", "1"])?;
        w.wait_registered(&broker.app, workers, Duration::from_secs(30))?;
        let client = broker.app.client().context("starting the futures client")?;
        Ok(Other::Broker {
            client,
            _workers: w,
            _broker: broker,
        })
    }

    fn scheduler(&self) -> Scheduler<'_> {
        match self {
            Other::Pool(p) => Processes(p),
            Other::Broker { client, .. } => Broker(client),
        }
    }
}

/// Median, min and max.
fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The yardstick: `workers` threads each generating their share of the same random stream
/// and summing it, with the library's fastest kernel (the vectorized [`random_fill`] into a
/// buffer in L1, summed in 16 lanes) and none of its graph, chunks or scheduling: what is
/// left between the two is the collection's own cost.
fn hand_mean(n: usize, seed: u64, workers: usize) -> f64 {
    let s = seed_of(seed);
    let per = n.div_ceil(workers);
    let total: f64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                sc.spawn(move || {
                    let (a, z) = ((w * per).min(n), ((w + 1) * per).min(n));
                    let mut buf = [0f64; 4096];
                    let mut lanes = [0f64; 16];
                    let mut tail = 0.0;
                    let mut i = a;
                    while i < z {
                        let len = buf.len().min(z - i);
                        random_fill(s, i as u64, &mut buf[..len]);
                        let mut it = buf[..len].chunks_exact(16);
                        for c in &mut it {
                            for (lane, x) in lanes.iter_mut().zip(c) {
                                *lane += x;
                            }
                        }
                        tail += it.remainder().iter().sum::<f64>();
                        i += len;
                    }
                    lanes.iter().sum::<f64>() + tail
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(f64::NAN)).sum()
    });
    total / n as f64
}

/// Generated text: words drawn from a skewed 20,000-word vocabulary, 12 words a line, in
/// files of 64 MB. Returns the files' glob and total bytes.
fn generate_text(dir: &Path, mb: usize) -> anyhow::Result<(String, u64)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let want = (mb as u64) << 20;
    let file_bytes: u64 = 64 << 20;
    let nfiles = want.div_ceil(file_bytes).max(1);
    let pattern = format!("{}/words-*.txt", dir.display());
    let existing: u64 = glob_size(&pattern);
    if existing != want {
        for old in glob_files(&pattern) {
            let _ = std::fs::remove_file(old);
        }
        let vocab: Vec<String> = (0..20_000u32)
            .map(|i| {
                let len = 2 + (i % 9) as usize;
                (0..len)
                    .map(|k| (b'a' + ((i as usize * 7 + k * 13) % 26) as u8) as char)
                    .chain(std::iter::once(char::from(b'a' + (i % 26) as u8)))
                    .chain(i.to_string().chars().take(2))
                    .collect()
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(17);
        let mut left = want;
        for f in 0..nfiles {
            let size = left.min(file_bytes);
            left -= size;
            let path = dir.join(format!("words-{f:04}.txt"));
            let mut out = Vec::with_capacity(size as usize);
            let mut on_line = 0;
            while (out.len() as u64) < size {
                // Skewed: small indices far more often (a Zipf-like word frequency).
                let r = rng.f64();
                let w = &vocab[((r * r * r) * vocab.len() as f64) as usize];
                out.extend_from_slice(w.as_bytes());
                on_line += 1;
                out.push(if on_line % 12 == 0 { b'\n' } else { b' ' });
            }
            out.truncate(size as usize);
            if let Some(last) = out.last_mut() {
                *last = b'\n';
            }
            std::fs::File::create(&path)
                .and_then(|mut fh| fh.write_all(&out))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok((pattern, want))
}

fn glob_files(pattern: &str) -> Vec<PathBuf> {
    glob::glob(pattern)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn glob_size(pattern: &str) -> u64 {
    glob_files(pattern)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    if a.quick {
        a.elements = a.elements.min(10_000_000);
        a.chunk = a.chunk.min(1_000_000);
        a.text_mb = a.text_mb.min(16);
        a.blocksize = a.blocksize.min(4 << 20);
        a.fold = a.fold.min(1_000_000);
        a.runs = 1;
    }
    if a.array_only {
        a.text_mb = 1;
        a.fold = 1000;
    }
    let workers = a.workers.max(1);
    let runs = a.runs.max(1);
    let pool = ThreadPool::builder()
        .workers(workers)
        .build()
        .context("starting the thread pool")?;
    let sched = Threads(&pool);

    // The other schedulers, started before any timing (their start is not measured).
    let mut others = Vec::new();
    for &on in &a.array_on {
        others.push((on, Other::start(on, workers, &a.redis)?, Vec::new()));
    }

    // 1. Array mean, alternating with the hand-written loop and the other schedulers.
    let (mut lov, mut hand) = (Vec::new(), Vec::new());
    let (mut m_lov, mut m_hand) = (0.0, 0.0);
    for run in 0..runs {
        let t = Instant::now();
        m_hand = hand_mean(a.elements, run as u64, workers);
        hand.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let g = Graph::new();
        let x = Array::random(&g, &[a.elements], &[a.chunk], run as u64)?;
        m_lov = lovage::collections::compute(&g, sched, x.mean())?;
        lov.push(t.elapsed().as_secs_f64());
        for (on, other, times) in &mut others {
            let t = Instant::now();
            let g = Graph::new();
            let x = Array::random(&g, &[a.elements], &[a.chunk], run as u64)?;
            let m = lovage::collections::compute(&g, other.scheduler(), x.mean())?;
            times.push(t.elapsed().as_secs_f64());
            // The same bits as on threads: the same tasks, the same partials, the same tree.
            anyhow::ensure!(
                m.to_bits() == m_lov.to_bits(),
                "the array mean on {} is {m}, on threads {m_lov}",
                on.label()
            );
        }
    }
    // The workers stop (and their broker goes) before the bag workloads.
    let other_times: Vec<(ArrayOn, (f64, f64, f64))> = others
        .into_iter()
        .map(|(on, other, times)| {
            drop(other);
            (on, stats(times))
        })
        .collect();
    let rss_after_array = peak_rss_mb();
    anyhow::ensure!(
        (m_lov - m_hand).abs() < 1e-9,
        "the array mean {m_lov} differs from the hand loop's {m_hand}"
    );
    let (lov, lov_lo, lov_hi) = stats(lov);
    let (hand, hand_lo, hand_hi) = stats(hand);

    // 2. Word count over generated text.
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("making a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let (pattern, bytes) = generate_text(&dir, a.text_mb)?;
    let mut wc = Vec::new();
    let mut distinct = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let g = Graph::new();
        let words = read_text(&g, &pattern, Some(a.blocksize))?.word_frequencies();
        let counts = lovage::collections::compute(&g, sched, words)?;
        wc.push(t.elapsed().as_secs_f64());
        distinct = counts.len();
    }
    let (wc, wc_lo, wc_hi) = stats(wc);
    let mbps = |s: f64| bytes as f64 / 1e6 / s;
    // The same word count on the other schedulers, each started only now.
    let mut wc_on = Vec::new();
    for &on in &a.wordcount_on {
        let other = Other::start(on, workers, &a.redis)?;
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let g = Graph::new();
            let words = read_text(&g, &pattern, Some(a.blocksize))?.word_frequencies();
            let counts = lovage::collections::compute(&g, other.scheduler(), words)?;
            times.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(
                counts.len() == distinct,
                "the word count on {} found {} distinct words, on threads {distinct}",
                on.label(),
                counts.len()
            );
        }
        drop(other);
        wc_on.push((on, stats(times)));
    }

    // 3. Fold of integers.
    let mut fold = Vec::new();
    let mut total = 0u64;
    for _ in 0..runs {
        let g = Graph::new();
        let b = Bag::from_iter(&g, 0..a.fold as u64, a.fold_partitions);
        let t = Instant::now();
        let s = b.fold(0u64, |acc, x| acc + x, |p, q| p + q, 8);
        total = lovage::collections::compute(&g, sched, s)?;
        fold.push(t.elapsed().as_secs_f64());
    }
    let n = a.fold as u64;
    anyhow::ensure!(
        total == n * n.saturating_sub(1) / 2,
        "the fold gave {total}"
    );
    let (fold, fold_lo, fold_hi) = stats(fold);

    let title = format!(
        "lovage bench collections: {workers} threads, median (min–max) of {runs} runs; figures \
         on a shared machine are noisy"
    );
    let mut t = Table::new(&[("workload", false), ("lovage", true), ("yardstick", true)]);
    t.row(vec![
        format!(
            "array mean of {} random f64 (chunks of {})",
            a.elements, a.chunk
        ),
        format!("{lov:.3} s ({lov_lo:.3}–{lov_hi:.3})"),
        format!(
            "hand loop {hand:.3} s ({hand_lo:.3}–{hand_hi:.3}); ratio {:.2}",
            lov / hand
        ),
    ]);
    let on_processes = other_times
        .iter()
        .find(|(on, _)| *on == ArrayOn::Processes)
        .map(|(_, (m, _, _))| *m);
    for (on, (m, lo, hi)) in &other_times {
        let vs = match on_processes {
            Some(p) if *on != ArrayOn::Processes => format!("; {:.2}× the process pool", m / p),
            _ => String::new(),
        };
        t.row(vec![
            format!(
                "the same mean on {} ({workers} {})",
                on.label(),
                if *on == ArrayOn::Processes {
                    "child processes"
                } else {
                    "worker processes × 1 slot"
                }
            ),
            format!("{m:.3} s ({lo:.3}–{hi:.3})"),
            format!("{:.2}× threads{vs}", m / lov),
        ]);
    }
    t.row(vec![
        format!(
            "word count over {} MB ({distinct} distinct words)",
            bytes >> 20
        ),
        format!(
            "{wc:.3} s = {:.0} MB/s ({:.0}–{:.0})",
            mbps(wc),
            mbps(wc_hi),
            mbps(wc_lo)
        ),
        "target ≥ 200 MB/s".into(),
    ]);
    for (on, (m, lo, hi)) in &wc_on {
        t.row(vec![
            format!(
                "the same word count on {} ({workers} {})",
                on.label(),
                if *on == ArrayOn::Processes {
                    "child processes"
                } else {
                    "worker processes × 1 slot"
                }
            ),
            format!(
                "{m:.3} s = {:.0} MB/s ({:.0}–{:.0})",
                mbps(*m),
                mbps(*hi),
                mbps(*lo)
            ),
            format!("{:.2}× threads", m / wc),
        ]);
    }
    t.row(vec![
        format!(
            "bag fold of {} ints ({} partitions)",
            a.fold, a.fold_partitions
        ),
        format!(
            "{fold:.4} s ({fold_lo:.4}–{fold_hi:.4}), {:.2} ns/item",
            fold * 1e9 / n.max(1) as f64
        ),
        String::new(),
    ]);
    t.row(vec![
        "peak RSS".into(),
        format!(
            "{rss_after_array:.0} MB after the array runs, {:.0} MB at the end",
            peak_rss_mb()
        ),
        String::new(),
    ]);
    let figures = json!({
        "workers": workers,
        "runs": runs,
        "array_elements": a.elements,
        "array_chunk": a.chunk,
        "array_mean_s": lov,
        "array_mean_s_range": [lov_lo, lov_hi],
        "hand_loop_s": hand,
        "hand_loop_s_range": [hand_lo, hand_hi],
        "array_vs_hand_ratio": lov / hand,
        "array_mean_on": other_times
            .iter()
            .map(|(on, (m, lo, hi))| (on.label().to_owned(), json!({"s": m, "s_range": [lo, hi]})))
            .collect::<serde_json::Map<_, _>>(),
        "peak_rss_mb_after_array": rss_after_array,
        "wordcount_mb": bytes >> 20,
        "wordcount_s": wc,
        "wordcount_mb_per_s": mbps(wc),
        "wordcount_mb_per_s_range": [mbps(wc_hi), mbps(wc_lo)],
        "wordcount_on": wc_on
            .iter()
            .map(|(on, (m, lo, hi))| {
                (
                    on.label().to_owned(),
                    json!({"s": m, "s_range": [lo, hi], "mb_per_s": mbps(*m)}),
                )
            })
            .collect::<serde_json::Map<_, _>>(),
        "fold_ints": a.fold,
        "fold_s": fold,
        "fold_s_range": [fold_lo, fold_hi],
        "peak_rss_mb": peak_rss_mb(),
    });
    output::select(a.json).bench(&BenchReport {
        title,
        tables: vec![t],
        spaced: false,
        figures,
    });
    Ok(())
}
