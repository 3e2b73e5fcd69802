//! Seed 003's `Condition` producer/consumer, across processes: consumers wait on the condition
//! until an item is there; the producer adds items and notifies one waiter each time.
//!
//! Run: `cargo run --release --example mp_condition [-- --quick]`

use std::time::Duration;

use lovage::mp::{Condition, Process, Value};

#[lovage::task]
fn consumer(cond: Condition, items: Value<u32>, taken: Value<u32>, n: u32) {
    for _ in 0..n {
        let guard = cond.acquire().unwrap();
        let (guard, ok) = guard.wait_for(|| items.get() > 0, Some(Duration::from_secs(30)));
        assert!(ok, "the producer stopped producing");
        let _guard = guard.unwrap();
        items.fetch_sub(1);
        taken.fetch_add(1);
    }
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let per_consumer = if quick { 20 } else { 10_000 };

    let cond = Condition::new().unwrap();
    let items = Value::new(0u32).unwrap();
    let taken = Value::new(0u32).unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            Process::spawn(consumer::s(
                cond.clone(),
                items.clone(),
                taken.clone(),
                per_consumer,
            ))
            .unwrap()
        })
        .collect();
    for _ in 0..2 * per_consumer {
        let guard = cond.acquire().unwrap();
        items.fetch_add(1);
        guard.notify(1);
    }
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    assert_eq!(taken.get(), 2 * per_consumer);
    println!(
        "2 consumers took {} items, each after waiting on the condition",
        taken.get()
    );
}
