//! What the collections' broker tests share: their workers are this test binary started again
//! as processes (lovage-testkit's [`WorkerRole`], in [`ROLE`]), with the built-in collection
//! tasks registered.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail
// Each test file uses some of these helpers.
#![allow(dead_code)]

use lovage_testkit::{serve_worker_role, Process, WorkerRole};

pub mod arrays;
pub mod pictures;

/// The environment variable that tells this binary which role to play.
pub const ROLE: &str = "LOVAGE_COLLECTIONS_TEST_ROLE";

/// Serves the role this process was started in, if any (a two-slot worker with the built-in
/// collection tasks); true when it did (then `main` returns).
pub fn serve_role() -> bool {
    lovage_collections::register().unwrap();
    serve_worker_role(ROLE)
}

/// A worker process on `url` named `name`, killed when dropped.
pub fn worker(url: &str, name: &str) -> Process {
    WorkerRole::new(url, name).start(ROLE)
}

/// A worker process on `url` named `name` with the data plane on (results of 64 KiB or more
/// stay with it), killed when dropped.
pub fn data_worker(url: &str, name: &str) -> Process {
    WorkerRole::new(url, name).data_plane_default().start(ROLE)
}
