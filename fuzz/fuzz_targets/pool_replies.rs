//! Reply frames as a process pool reads them from a child's stdout (in pieces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_fuzz::Pieces;

fuzz_target!(|data: &[u8]| {
    let _ = lovage_pool::fuzzing::read_replies(&mut Pieces::from_input(data));
});
