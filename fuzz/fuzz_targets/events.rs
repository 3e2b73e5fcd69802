//! A batch of events as the brokers store it (an SQLite `events` row, a Redis stream entry:
//! compact positional MessagePack behind a marker byte, or the earlier form with field names),
//! read back as `read_events` does for `lovage events` and the server's event stream. What
//! decodes is shown as JSON (as the server sends it) and encodes again to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_broker::fuzzing::{encode_event_batch, event_batch};

fuzz_target!(|data: &[u8]| {
    let Ok(mut events) = event_batch(data) else {
        return;
    };
    for e in &mut events {
        let _ = serde_json::to_string(e);
        let _ = e.ts.to_string();
        // A broker numbers events as it appends them: the stored batch keeps no seq.
        e.seq = 0;
    }
    let again = encode_event_batch(&events).expect("what decoded encodes");
    assert_eq!(
        event_batch(&again).expect("what was encoded decodes"),
        events,
        "a decoded batch round-trips"
    );
});
