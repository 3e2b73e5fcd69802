//! Result records, errors, dead letters and worker records as the result stores and brokers
//! keep them (JSON), read back as a client does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_broker::{DeadLetter, ResultRecord, WorkerInfo};
use lovage_core::{Codec, TaskError, TaskId, TaskState};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<ResultRecord>(data) {
        let _ = r.outcome::<serde_json::Value>();
        let _ = r.outcome::<i64>();
        let _ = r.outcome::<String>();
        if let Some(t) = r.expires {
            let _ = t.until();
            let _ = t.to_string();
        }
    }
    if let Ok(r) = lovage_core::codec::from_msgpack::<ResultRecord>(data) {
        let _ = r.outcome::<serde_json::Value>();
    }
    let _ = serde_json::from_slice::<TaskError>(data);
    let _ = Codec::Msgpack.decode::<TaskError>(data, "task error");
    let _ = serde_json::from_slice::<DeadLetter>(data);
    let _ = serde_json::from_slice::<WorkerInfo>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<TaskState>();
        let _ = text.parse::<TaskId>();
        let _ = text.parse::<Codec>();
    }
});
