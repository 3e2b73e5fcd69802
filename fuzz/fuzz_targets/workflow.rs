//! Workflow descriptions in JSON (`lovage flow`), parsed into a canvas and planned.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(canvas) = lovage_flow::description::parse(text) {
        let _ = canvas.result_id();
        let _ = canvas.task_ids();
        let _ = rmp_serde::to_vec_named(&canvas);
    }
});
