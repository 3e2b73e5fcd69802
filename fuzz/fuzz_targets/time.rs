//! Durations, rate limits and RFC 3339 times as the CLI, schedules and options take them, and
//! the arithmetic every reader does on a stored timestamp.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lovage_broker::Timestamp;

fuzz_target!(|data: &[u8]| {
    if let Some((head, _)) = data.split_first_chunk::<16>() {
        // Stored timestamps are whatever a row or a value says.
        let (a, b) = head.split_at(8);
        let a = Timestamp::from_millis(i64::from_le_bytes(a.try_into().unwrap_or_default()));
        let b = Timestamp::from_millis(i64::from_le_bytes(b.try_into().unwrap_or_default()));
        let _ = a.until();
        let _ = a - b;
        let _ = a + Duration::from_millis(b.as_millis().unsigned_abs());
        let _ = a.to_string();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = lovage_core::parse_duration(text);
    let _ = lovage_core::parse_rate(text);
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        let printed = t.to_string();
        assert_eq!(Timestamp::parse_rfc3339(&printed), Ok(t), "{printed}");
    }
});
