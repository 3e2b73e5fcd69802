//! A task's value in Redis (`"{delivery} {score} {queue length} {queue}"` then the envelope in
//! MessagePack) as a reserve decodes it, or sets it aside as a dead letter.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match lovage_broker::fuzzing::redis_task_value("0190a8b2-0000-7000-8000-000000000000", data, 1) {
        Ok(d) => {
            if let Some(eta) = d.envelope.eta {
                let _ = eta.until();
            }
        }
        Err(bad) => {
            let (dead, record) = *bad;
            let _ = serde_json::to_vec(&dead);
            let _ = record.map(|r| serde_json::to_vec(&r));
        }
    }
});
