//! A word count over a directory of text with a bag (Dask's word-count example): generated
//! files, read in byte ranges cut at newlines, counted per partition over the raw bytes and
//! merged in a tree; then the ten most frequent words.
//!
//! Run: `cargo run --release --example bag_wordcount [DIR]` (add `--quick` for a small
//! directory; without DIR a generated one is used)

use std::io::Write;
use std::time::Instant;

use lovage::bag::{read_text, Bag};
use lovage::collections::{compute, Error};
use lovage::graph::{Graph, Threads};
use lovage::workloads::quick_from_args;
use lovage::ThreadPool;

const WORDS: [&str; 12] = [
    "the", "a", "lovage", "task", "queue", "worker", "bag", "array", "graph", "chunk", "broker",
    "result",
];

fn main() -> Result<(), Error> {
    let quick = quick_from_args();
    let given = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let tmp = std::env::temp_dir().join(format!("lovage-wordcount-{}", std::process::id()));
    let dir = match &given {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let (files, lines) = if quick { (4, 20_000) } else { (8, 1_000_000) };
            generate(&tmp, files, lines).map_err(|e| Error::Input(e.to_string()))?;
            tmp.clone()
        }
    };
    let pool = ThreadPool::new(2);
    let g = Graph::new();
    let text = read_text(&g, &format!("{}/*", dir.display()), Some(8 << 20))?;
    let t = Instant::now();
    let counts = compute(&g, Threads(&pool), text.word_frequencies())?;
    let took = t.elapsed();
    let total: u64 = counts.values().sum();
    println!(
        "{total} words ({} distinct) in {} partitions, {took:.2?}",
        counts.len(),
        text.npartitions()
    );

    // The ten most frequent, as a bag of (word, count) pairs.
    let pairs = Bag::from_iter(&g, counts, 4);
    for (w, c) in compute(&g, Threads(&pool), pairs.top_k(10, |p| p.1))? {
        println!("{c:>10}  {w}");
    }
    if given.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// `files` files of `lines` lines of 8 words each, drawn from `WORDS` with a skew.
fn generate(dir: &std::path::Path, files: usize, lines: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = fastrand::Rng::with_seed(3);
    for f in 0..files {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{f}.txt")))?);
        for _ in 0..lines {
            for k in 0..8 {
                let r = rng.f64();
                let w = WORDS[((r * r) * WORDS.len() as f64) as usize];
                out.write_all(w.as_bytes())?;
                out.write_all(if k == 7 { b"\n" } else { b" " })?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
