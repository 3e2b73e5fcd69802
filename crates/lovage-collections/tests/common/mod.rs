//! What the collections' broker tests share: their workers are this test binary started again
//! as processes (`worker|url|name` in [`ROLE`]), with the built-in collection tasks registered.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail
// Each test file uses some of these helpers.
#![allow(dead_code)]

use std::process::Stdio;

use lovage_broker::connect;
use lovage_testkit::Process;
use lovage_worker::{Worker, WorkerConfig};

pub mod arrays;

/// The environment variable that tells this binary which role to play.
pub const ROLE: &str = "LOVAGE_COLLECTIONS_TEST_ROLE";

/// Serves the role this process was started in, if any; true when it did (then `main` returns).
pub fn serve_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    match role.split('|').collect::<Vec<_>>()[..] {
        ["worker", url, name] => worker_main(url, name, false),
        ["data-worker", url, name] => worker_main(url, name, true),
        _ => panic!("bad {ROLE} {role:?}"),
    }
    true
}

/// A worker process on `url` named `name`, killed when dropped.
pub fn worker(url: &str, name: &str) -> Process {
    Process::this_binary(ROLE, &format!("worker|{url}|{name}"), Stdio::inherit())
}

/// A worker process on `url` named `name` with the data plane on (results of 64 KiB or more
/// stay with it), killed when dropped.
pub fn data_worker(url: &str, name: &str) -> Process {
    Process::this_binary(ROLE, &format!("data-worker|{url}|{name}"), Stdio::inherit())
}

/// A worker process's life: two slots, the built-in collection tasks registered, the data
/// plane on when `data`.
fn worker_main(url: &str, name: &str, data: bool) {
    lovage_collections::register().unwrap();
    let config = WorkerConfig {
        concurrency: 2,
        name: name.to_owned(),
        data: data.then(lovage_worker::DataConfig::default),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(connect(url).unwrap(), config).unwrap();
    lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
    worker.run().unwrap();
}
