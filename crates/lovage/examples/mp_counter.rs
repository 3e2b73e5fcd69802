//! A shared counter incremented by two processes: with the `Value`'s lock every increment
//! counts; without it (read, add, write back) updates are lost — the race seed 002 warns of.
//!
//! Run: `cargo run --release --example mp_counter [-- --quick]`

use lovage::mp::{Process, Value};

#[lovage::task]
fn add_locked(counter: Value<u64>, n: u64) {
    for _ in 0..n {
        *counter.get_lock().unwrap() += 1;
    }
}

#[lovage::task]
fn add_racy(counter: Value<u64>, n: u64) {
    for _ in 0..n {
        let v = counter.get(); // another process may write between this read…
        counter.set(v + 1); // …and this write: its update is lost
    }
}

fn run(racy: bool, n: u64) -> u64 {
    let counter = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| {
            let sig = if racy {
                add_racy::s(counter.clone(), n)
            } else {
                add_locked::s(counter.clone(), n)
            };
            Process::spawn(sig).unwrap()
        })
        .collect();
    for p in ps {
        assert!(p.join().unwrap().success());
    }
    counter.get()
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20_000 } else { 1_000_000 };
    let locked = run(false, n);
    assert_eq!(locked, 2 * n);
    println!("with the lock:    {locked} of {}", 2 * n);
    let racy = run(true, n);
    println!(
        "without the lock: {racy} of {} ({} updates lost)",
        2 * n,
        2 * n - racy
    );
}
