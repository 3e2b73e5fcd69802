//! A process pool cannot run a collection's closures: `compute` says so before starting.
//! (Its own `main`: a process pool re-runs this executable as its children.)

use lovage_collections::array::Array;
use lovage_collections::bag::Bag;
use lovage_collections::{compute, Error};
use lovage_graph::{Graph, Processes};
use lovage_pool::ProcessPool;

fn main() {
    lovage_pool::child_main();
    let pool = ProcessPool::new(1);
    let g = Graph::new();
    let b = Bag::from_iter(&g, 0..10i64, 2);
    let err = compute(&g, Processes(&pool), b.count()).err();
    assert_eq!(err, Some(Error::Unsupported("Processes")));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("cannot cross processes"), "{text}");
    let Ok(x) = Array::ones(&g, &[4], &[2]) else {
        panic!("a 4-element array of ones")
    };
    assert_eq!(
        x.compute(Processes(&pool)).err(),
        Some(Error::Unsupported("Processes"))
    );
    assert!(b.compute(Processes(&pool)).is_err());
    // The graph alone refuses the closure nodes too, naming one.
    let direct = g.compute(Processes(&pool), b.count()).err();
    let text = direct.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("is a closure"), "{text}");
}
