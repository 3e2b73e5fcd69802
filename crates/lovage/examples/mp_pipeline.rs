//! A three-stage pipeline of processes joined by queues: numbers → squares → sums of pairs,
//! each stage passing the `None` sentinel on when its input ends.
//!
//! Run: `cargo run --release --example mp_pipeline [-- --quick]`

use lovage::mp::{Process, Queue};

#[lovage::task]
fn generate(out: Queue<Option<u64>>, n: u64) {
    for i in 1..=n {
        out.put(&Some(i)).unwrap();
    }
    out.put(&None).unwrap();
}

#[lovage::task]
fn square(input: Queue<Option<u64>>, out: Queue<Option<u64>>) {
    while let Some(x) = input.get().unwrap() {
        out.put(&Some(x * x)).unwrap();
    }
    out.put(&None).unwrap();
}

#[lovage::task]
fn pair_sums(input: Queue<Option<u64>>, out: Queue<Option<u64>>) {
    let mut pending = None;
    while let Some(x) = input.get().unwrap() {
        match pending.take() {
            None => pending = Some(x),
            Some(a) => out.put(&Some(a + x)).unwrap(),
        }
    }
    if let Some(a) = pending {
        out.put(&Some(a)).unwrap();
    }
    out.put(&None).unwrap();
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100 } else { 1_000_000 };

    let (q1, q2, q3) = (
        Queue::new().unwrap(),
        Queue::new().unwrap(),
        Queue::new().unwrap(),
    );
    let stages = [
        Process::spawn(generate::s(q1.clone(), n)).unwrap(),
        Process::spawn(square::s(q1, q2.clone())).unwrap(),
        Process::spawn(pair_sums::s(q2, q3.clone())).unwrap(),
    ];
    let mut total = 0u64;
    let mut count = 0;
    while let Some(x) = q3.get().unwrap() {
        total = total.wrapping_add(x);
        count += 1;
    }
    for s in stages {
        assert!(s.join().unwrap().success());
    }
    let expect = (1..=n).map(|i| i * i).fold(0u64, u64::wrapping_add);
    assert_eq!(total, expect);
    println!("3 stages: {n} numbers → {count} pair sums; total of squares {total}");
}
