//! Tasks every lovage binary has, so the CLI is useful without writing Rust.

use std::time::Duration;

/// Does nothing: the unit of throughput benchmarks.
#[crate::task(name = "lovage.noop")]
pub fn noop() {}

/// Sleeps for `seconds` (fractional allowed) and returns them.
#[crate::task(name = "lovage.sleep")]
pub fn sleep(seconds: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
    seconds
}

/// Returns its argument unchanged.
#[crate::task(name = "lovage.echo")]
pub fn echo(value: serde_json::Value) -> serde_json::Value {
    value
}
