//! The conformance suite (`lovage_broker::conformance`) against every backend this crate ships,
//! one line per backend; each test shows as `BACKEND::TEST`. A new backend adds its line here,
//! or calls `conformance::exercise` from a test file of its own (see the module's docs).
//! What only one backend promises lives in its own file (tests/sqlite.rs, tests/redis.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use lovage_broker::conformance::{self, fixtures};

fn main() {
    conformance::run(
        [
            conformance::trials("memory", fixtures::memory),
            conformance::trials("sqlite", fixtures::sqlite),
            conformance::trials("redis", fixtures::redis),
        ]
        .into_iter()
        .flatten(),
    );
}
