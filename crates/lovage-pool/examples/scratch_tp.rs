use lovage_pool::ThreadPool;
use std::time::Instant;
fn main() {
    let pool = ThreadPool::new(2);
    for _ in 0..5 {
        let n = 1_000_000;
        let t = Instant::now();
        let hs: Vec<_> = (0..n).map(|i| pool.submit(move || i)).collect();
        let mut s = 0u64;
        for h in hs {
            s += h.result().unwrap();
        }
        let el = t.elapsed();
        println!("submit+result {:.0}/s {}", n as f64 / el.as_secs_f64(), s);
        let t = Instant::now();
        let c: u64 = pool.map(|x: u64| x, 0..n, 1000).map(|r| r.unwrap()).sum();
        println!("map {:.0}/s {}", n as f64 / t.elapsed().as_secs_f64(), c);
    }
}
