//! Beat schedules (TOML), parsed, then asked for each entry's next tick and its envelope, as a
//! beat does at start.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_beat::Schedule;
use lovage_broker::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schedule) = Schedule::parse(text) else {
        return;
    };
    // 2026-11-24T10:00:00Z
    let now = Timestamp::from_millis(1_795_514_400_000);
    for entry in &schedule.entries {
        let _ = entry.describe();
        if let Some(tick) = entry.next_after(now) {
            let _ = entry.envelope(tick);
        }
    }
});
