//! Cron expressions, parsed and asked for their next minute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_beat::Cron;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cron) = Cron::parse(text) {
        let _ = cron.to_string();
        // 2026-11-24T10:00:00Z
        let after = jiff::Timestamp::from_second(1_795_514_400).unwrap_or_default();
        let _ = cron.next_after(after, &jiff::tz::TimeZone::UTC);
    }
});
