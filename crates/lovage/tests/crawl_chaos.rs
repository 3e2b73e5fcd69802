//! The crawler on a broker survives a worker killed with -9 (issue 16, item 7): two
//! `lovage worker` processes crawl a synthetic site (8 links a page, duplicates and cycles),
//! each page spawning its links from inside its task into one scope; one worker is killed
//! mid-run and replaced. The scope's join must count every reachable page exactly once, all
//! succeeded, and some task must have been delivered again (the kill caught work in flight).

mod common;

use common::{Killed, RedisPrefix};

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lovage::workloads::crawl::{crawl, links_of, page_key, reachable};
use lovage::App;

const BIN: &str = env!("CARGO_BIN_EXE_lovage");
const SITE: u64 = 2_000;

/// Every page reachable from page 0.
fn pages(size: u64) -> Vec<u64> {
    let mut seen = std::collections::HashSet::from([0u64]);
    let mut todo = vec![0u64];
    while let Some(p) = todo.pop() {
        for l in links_of(p, size) {
            if seen.insert(l) {
                todo.push(l);
            }
        }
    }
    seen.into_iter().collect()
}

fn worker(url: &str) -> Killed {
    Killed(
        Command::new(BIN)
            .args(["worker", "--concurrency", "2", "--lease", "2s"])
            .env("LOVAGE_BROKER", url)
            .env("LOVAGE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Crawls through a kill and checks it; returns how many pages were delivered again.
fn crawl_survives_a_kill(url: &str) -> usize {
    let app = App::connect(url).unwrap();
    let expected = reachable(SITE) as u64;
    let mut workers = [worker(url), worker(url)];
    let (tx, rx) = mpsc::channel();
    let killer = {
        let (app, url) = (app.clone(), url.to_owned());
        std::thread::spawn(move || {
            let scope: lovage::TaskId = rx.recv().unwrap();
            let members = format!("lovage.scope.{scope}.all");
            let deadline = Instant::now() + Duration::from_secs(120);
            // Kill once a fifth of the pages are known (some done, more in flight).
            while app.backend().shared().dict_len(&members).unwrap() * 5 < expected {
                assert!(
                    Instant::now() < deadline,
                    "the crawl stalled before the kill"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            workers[0].kill().unwrap(); // SIGKILL
            workers[0].wait().unwrap();
            workers[0] = worker(&url);
            workers
        })
    };
    let report = app
        .scope_timeout(Some(Duration::from_secs(240)), |s| {
            tx.send(s.id()).unwrap();
            s.spawn_keyed(&page_key(0), crawl::s(0, SITE))
        })
        .unwrap();
    let _workers = killer.join().unwrap();
    report.value.unwrap();
    assert_eq!(
        report.spawned, expected,
        "every reachable page counted once"
    );
    assert_eq!(report.succeeded, expected, "every page done");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let ids: Vec<lovage::TaskId> = pages(SITE)
        .into_iter()
        .map(|p| lovage::scope::keyed_id(report.id, &page_key(p)))
        .collect();
    let mut redelivered = 0;
    for chunk in ids.chunks(500) {
        for rec in app.backend().results().get_many(chunk).unwrap() {
            let rec = rec.expect("every page has its record");
            assert_eq!(rec.state, lovage::TaskState::Success);
            redelivered += usize::from(rec.attempts > 1);
        }
    }
    redelivered
}

#[test]
fn the_crawl_on_sqlite_counts_every_page_once_through_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    common::until_a_redelivery(|run| {
        let db = dir.path().join(format!("crawl-{run}.db"));
        crawl_survives_a_kill(&format!("sqlite://{}", db.display()))
    });
}

#[test]
fn the_crawl_on_redis_counts_every_page_once_through_a_kill_9() {
    let prefixes: Vec<RedisPrefix> = (0..3).map(|_| RedisPrefix::new()).collect();
    common::until_a_redelivery(|run| crawl_survives_a_kill(&prefixes[run].url()));
}
