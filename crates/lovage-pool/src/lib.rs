//! lovage's local executors: a work-stealing [`ThreadPool`] and a crash-isolating
//! [`ProcessPool`], both with the `concurrent.futures` surface (submit, map, as_completed, wait,
//! cancel, shutdown) in Rust style.
//!
//! A task that panics (thread pool) or whose process dies (process pool) fails alone: its
//! handle reports the error and the pool keeps going.

// The entry-point docs must show `fn main`: that is where `child_main` goes.
#![allow(clippy::needless_doctest_main)]

mod executor;
mod handle;
mod ordered;
pub mod process;
mod thread;
mod wait;

pub use executor::Executor;
pub use handle::{Completer, TaskHandle};
pub use process::{
    child_main, ProcessPool, ProcessPoolBuilder, ProcessScope, ProcessScopeReport, ScopeFailure,
};
pub use thread::{MapUnordered, Scope, ThreadPool, ThreadPoolBuilder};
pub use wait::{as_completed, wait, AsCompleted, ReturnWhen, Waited};

/// The frame readers over any byte stream, for the fuzz targets in `fuzz/`. Not a public API.
#[doc(hidden)]
pub mod fuzzing {
    use std::io::{Read, Write};

    use crate::process::{child, frame};

    /// A child's request loop (the real one) reading frames from `input`, replies to `out`.
    pub fn serve_requests(input: &mut impl Read, out: &mut impl Write) -> std::io::Result<()> {
        child::serve_frames(input, out, lovage_core::Registry::global())
    }

    /// The parent's side: reads `input` in the pieces it returns, decoding every whole reply
    /// frame as it arrives, as a slot's reader does; returns how many replies it decoded.
    pub fn read_replies(input: &mut impl Read) -> std::io::Result<usize> {
        let mut inbuf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut replies = 0;
        loop {
            let n = input.read(&mut chunk)?;
            if n == 0 {
                return Ok(replies);
            }
            inbuf.extend_from_slice(&chunk[..n]);
            let mut pos = 0;
            while let Some(body) =
                frame::split_frame(&inbuf[pos..]).map_err(std::io::Error::other)?
            {
                let body = pos + body.start..pos + body.end;
                frame::decode_reply(&inbuf[body.clone()]).map_err(std::io::Error::other)?;
                pos = body.end;
                replies += 1;
            }
            inbuf.drain(..pos);
        }
    }
}
