//! Request frames as a process-pool child reads them from its stdin (in pieces), through the
//! child's own loop. No task is registered here, so every call answers UnknownTask.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_fuzz::Pieces;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = lovage_pool::fuzzing::serve_requests(&mut Pieces::from_input(data), &mut out);
});
