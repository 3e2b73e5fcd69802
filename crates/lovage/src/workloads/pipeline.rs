//! A bounded producer–consumer pipeline (the seeds' `Queue` between processes): a producer
//! feeds items through a bounded channel to consumers on the pool, results flow back to `main`.

use std::sync::mpsc;
use std::sync::Mutex;

use super::{Scale, Workload};
use crate::{ProcessPool, ThreadPool};

/// The producer's item `i`: a block of pseudo-random words.
pub fn produce(i: u64) -> [u64; 8] {
    let mut rng = fastrand::Rng::with_seed(i);
    std::array::from_fn(|_| rng.u64(..))
}

/// The consumer's work on one block: `rounds` rounds of mixing, folded to one word.
pub fn transform(mut block: [u64; 8], rounds: u32) -> u64 {
    for r in 0..rounds {
        for i in 0..8 {
            let x = block[i] ^ block[(i + 3) % 8].rotate_left(r % 63 + 1);
            block[i] = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 29);
        }
    }
    block.iter().fold(0, |a, &b| a ^ b)
}

/// `items` blocks through a channel of `capacity` slots.
pub struct Pipeline {
    items: u64,
    rounds: u32,
    capacity: usize,
}

impl Pipeline {
    /// The benchmark's size at `scale`.
    pub fn new(scale: Scale) -> Self {
        let items = match scale {
            Scale::Full => 1_000,
            Scale::Quick => 20,
        };
        Pipeline {
            items,
            rounds: 80_000,
            capacity: 64,
        }
    }
}

impl Workload for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }
    fn describe(&self) -> String {
        format!(
            "producer -> bounded channel ({}) -> consumers, {} items",
            self.capacity, self.items
        )
    }
    fn serial(&self) -> u64 {
        (0..self.items)
            .map(|i| transform(produce(i), self.rounds))
            .fold(0, u64::wrapping_add)
    }
    fn threads(&self, pool: &ThreadPool) -> u64 {
        let (work_tx, work_rx) = mpsc::sync_channel::<[u64; 8]>(self.capacity);
        let (done_tx, done_rx) = mpsc::sync_channel::<u64>(self.capacity);
        let work_rx = Mutex::new(work_rx);
        let rounds = self.rounds;
        pool.scope(|s| {
            for _ in 0..pool.workers() {
                let (work_rx, done_tx) = (&work_rx, done_tx.clone());
                s.spawn(move || loop {
                    let item = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match item {
                        Ok(block) => done_tx
                            .send(transform(block, rounds))
                            .expect("collector gone"),
                        Err(_) => break, // producer finished and the channel is drained
                    }
                });
            }
            drop(done_tx);
            let items = self.items;
            std::thread::scope(|t| {
                t.spawn(move || {
                    for i in 0..items {
                        work_tx.send(produce(i)).expect("consumers gone");
                    }
                });
                done_rx.iter().fold(0, u64::wrapping_add)
            })
        })
    }
    fn processes(&self, _pool: &ProcessPool) -> Option<u64> {
        None // channels between threads; the process-pool form of this is `ProcessPool::map`
    }
}
