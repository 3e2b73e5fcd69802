//! Python's `multiprocessing.Manager` without a manager process: four processes fill a dict
//! and a list that live in the broker (an SQLite file here, `--broker redis://…` for processes
//! on several hosts), and count what they did with an atomic update of one shared key. Then
//! the same count done as a read and a write, which loses updates — the race a proxy's
//! `d[k] += 1` has.
//!
//! Run: `cargo run --release --example mp_manager [-- --quick] [--broker URL]`

use lovage::mp::{Manager, Process, SharedDict, SharedList};

#[lovage::task]
fn square_range(
    squares: SharedDict<u64, u64>,
    counts: SharedDict<String, u64>,
    log: SharedList<String>,
    worker: u64,
    start: u64,
    end: u64,
) {
    let entries: Vec<(u64, u64)> = (start..end).map(|n| (n, n * n)).collect();
    squares
        .extend(entries.iter().map(|(k, v)| (k, v)))
        .expect("write the squares");
    for _ in start..end {
        counts
            .update_and_fetch(&"done".to_owned(), |n| Some(n.unwrap_or(0) + 1))
            .expect("count");
    }
    log.push(&format!("worker {worker}: {start}..{end}"))
        .expect("log");
}

#[lovage::task]
fn count_racy(counts: SharedDict<String, u64>, n: u64) {
    let key = "racy".to_owned();
    for _ in 0..n {
        let v = counts.get(&key).expect("read").unwrap_or(0); // another process may write here…
        counts.insert(&key, &(v + 1)).expect("write"); // …and its update is lost
    }
}

fn main() {
    lovage::init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("lovage-mp-manager-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = match args.iter().position(|a| a == "--broker") {
        Some(i) => args.get(i + 1).expect("--broker URL").clone(),
        None => format!("sqlite://{}", dir.join("manager.db").display()),
    };
    let n: u64 = if quick { 2_000 } else { 20_000 };
    let procs = 4;

    let manager = Manager::connect(&url).expect("open the broker");
    let prefix = format!("mp-manager-{}", std::process::id());
    let squares = manager
        .dict::<u64, u64>(&format!("{prefix}-squares"))
        .unwrap();
    let counts = manager
        .dict::<String, u64>(&format!("{prefix}-counts"))
        .unwrap();
    let log = manager.list::<String>(&format!("{prefix}-log")).unwrap();

    let started = std::time::Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|w| {
            let (from, to) = (w * n / procs, (w + 1) * n / procs);
            let sig = square_range::s(squares.clone(), counts.clone(), log.clone(), w, from, to);
            Process::spawn(sig).expect("spawn")
        })
        .collect();
    for c in children {
        assert!(c.join().expect("join").success(), "a worker failed");
    }
    let took = started.elapsed();

    assert_eq!(squares.len().unwrap(), n, "every square is in the dict");
    for (k, v) in squares.entries().unwrap() {
        assert_eq!(v, k * k, "square of {k}");
    }
    let done = counts.get(&"done".to_owned()).unwrap();
    assert_eq!(done, Some(n), "no atomic update was lost");
    let mut lines = log.to_vec().unwrap();
    lines.sort();
    assert_eq!(lines.len() as u64, procs);
    println!("{procs} processes, {n} squares and {n} atomic increments in {took:.2?} on {url}");
    for line in &lines {
        println!("  {line}");
    }

    let racy_n = n / 4;
    let racers: Vec<_> = (0..2)
        .map(|_| Process::spawn(count_racy::s(counts.clone(), racy_n)).expect("spawn"))
        .collect();
    for r in racers {
        assert!(r.join().expect("join").success());
    }
    let racy = counts.get(&"racy".to_owned()).unwrap().unwrap_or(0);
    println!(
        "read-then-write from 2 processes: {racy} of {} ({} updates lost)",
        2 * racy_n,
        2 * racy_n - racy
    );

    squares.clear().unwrap();
    counts.clear().unwrap();
    log.clear().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
