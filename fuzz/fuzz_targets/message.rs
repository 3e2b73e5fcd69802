//! Task messages as brokers store them: the versioned `Message` (JSON and MessagePack, with its
//! version probe), the `Envelope`, and the columns SQLite keeps apart (options as JSON, workflow
//! frames as MessagePack), plus the workflow blob lovage-flow stores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_broker::Envelope;
use lovage_core::canvas::{Canvas, Frame};
use lovage_core::{Codec, Message, TaskOptions};

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Json, Codec::Msgpack] {
        if let Ok(m) = Message::decode(data, codec) {
            // What a worker does next with a message it read.
            let _ = m.encode();
            let _ = m.signature();
        }
        if let Ok(e) = codec.decode::<Envelope>(data, "envelope") {
            if let Some(eta) = e.eta {
                let _ = eta.until();
            }
            let _ = codec.encode(&e, "envelope");
        }
        let _ = codec.transcode(data, Codec::Json);
        let _ = codec.transcode(data, Codec::Msgpack);
    }
    let _ = serde_json::from_slice::<TaskOptions>(data);
    let _ = lovage_core::codec::from_msgpack::<Vec<Frame>>(data);
    let _ = lovage_core::codec::from_msgpack::<Canvas>(data);
    let _ = lovage_core::codec::from_msgpack::<Vec<Canvas>>(data);
});
