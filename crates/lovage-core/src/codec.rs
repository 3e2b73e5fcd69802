//! How arguments, results and messages become bytes.
//!
//! JSON is the default (readable in a database browser, easy to produce from other languages);
//! MessagePack is the compact, faster option. Neither can execute code on decode: a message can
//! only name a registered task and carry data.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of lovage's wire format this build writes. A reader refuses messages with a
/// higher version instead of guessing at fields it does not know.
pub const WIRE_VERSION: u32 = 1;

/// How deep MessagePack may nest when lovage decodes it. rmp-serde's own limit (1,024) let a
/// message of a few KiB of nested workflow steps overflow the stack of the thread decoding it
/// (a worker's 2 MiB), aborting the process instead of refusing the message; real workflows
/// nest a few levels.
pub const MSGPACK_MAX_DEPTH: usize = 256;

/// Decodes MessagePack with the nesting limit [`MSGPACK_MAX_DEPTH`]. Every reader of stored
/// MessagePack (messages, envelopes, workflow frames and blobs) goes through it.
pub fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MSGPACK_MAX_DEPTH);
    T::deserialize(&mut de)
}

/// A serialisation format for task arguments and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// JSON (`serde_json`): the default.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`), structs encoded as maps so fields can be added later.
    Msgpack,
}

/// Encoding or decoding failed; says which format, which direction and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A value could not be turned into bytes.
    #[error("cannot encode {what} as {codec}: {reason}")]
    Encode {
        codec: Codec,
        what: &'static str,
        reason: String,
    },
    /// Bytes could not be turned into the expected value.
    #[error("cannot decode {what} from {codec}: {reason}")]
    Decode {
        codec: Codec,
        what: &'static str,
        reason: String,
    },
    /// The message was written by a newer lovage.
    #[error("message format version {found} is newer than this lovage understands (up to {supported}); upgrade this process")]
    NewerVersion { found: u32, supported: u32 },
    /// A call option that cannot be sent as given (a resource name with a space, 0 units).
    #[error("invalid {option} option: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
}

impl From<CodecError> for crate::TaskError {
    fn from(e: CodecError) -> Self {
        crate::TaskError::new(crate::error::kinds::CODEC, e.to_string())
    }
}

impl Codec {
    /// The format's name as used in URLs, options and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Msgpack => "msgpack",
        }
    }

    /// Encodes a value; `what` names it in errors ("arguments of tasks::add").
    pub fn encode<T: Serialize + ?Sized>(
        self,
        value: &T,
        what: &'static str,
    ) -> Result<Vec<u8>, CodecError> {
        let res = match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Codec::Msgpack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
        };
        res.map_err(|reason| CodecError::Encode {
            codec: self,
            what,
            reason,
        })
    }

    /// Decodes a value; `what` names it in errors.
    pub fn decode<T: DeserializeOwned>(
        self,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<T, CodecError> {
        let res = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::Msgpack => from_msgpack(bytes).map_err(|e| e.to_string()),
        };
        res.map_err(|reason| CodecError::Decode {
            codec: self,
            what,
            reason,
        })
    }

    /// Re-encodes bytes from this codec into another, through a self-describing value.
    pub fn transcode(self, bytes: &[u8], to: Codec) -> Result<Vec<u8>, CodecError> {
        if self == to {
            return Ok(bytes.to_vec());
        }
        let value: serde_json::Value = self.decode(bytes, "payload")?;
        to.encode(&value, "payload")
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Codec::Json),
            "msgpack" | "messagepack" | "rmp" => Ok(Codec::Msgpack),
            other => Err(format!(
                "unknown codec {other:?} (expected json or msgpack)"
            )),
        }
    }
}

/// Refuses a message version this build cannot read.
pub fn check_version(found: u32) -> Result<(), CodecError> {
    if found > WIRE_VERSION {
        Err(CodecError::NewerVersion {
            found,
            supported: WIRE_VERSION,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: i64,
        b: String,
        c: Vec<f64>,
    }

    proptest! {
        #[test]
        fn both_codecs_round_trip(a in any::<i64>(), b in ".{0,20}", c in proptest::collection::vec(-1e9f64..1e9, 0..8)) {
            let s = Sample { a, b, c };
            for codec in [Codec::Json, Codec::Msgpack] {
                let bytes = codec.encode(&s, "sample").unwrap();
                prop_assert_eq!(&codec.decode::<Sample>(&bytes, "sample").unwrap(), &s);
            }
        }
    }

    #[test]
    fn decode_errors_say_what_and_which_codec() {
        let err = Codec::Json
            .decode::<Sample>(b"{\"a\":1}", "arguments of t")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("arguments of t")
                && text.contains("json")
                && text.contains("missing field `b`"),
            "{text}"
        );
    }

    #[test]
    fn newer_versions_are_refused() {
        assert!(check_version(WIRE_VERSION).is_ok());
        let err = check_version(WIRE_VERSION + 1).unwrap_err();
        assert!(err.to_string().contains("newer"));
    }

    /// Found while writing the fuzz target `message`: deeply nested MessagePack (here a workflow step
    /// nested in chains, ~11 bytes a level) overflowed the decoding thread's stack.
    #[test]
    fn deep_msgpack_is_refused_not_a_stack_overflow() {
        use crate::canvas::Canvas;
        // A canvas as [node, on_error], its node {"Chain": [canvas]}, 4,000 times.
        let mut bytes = Vec::new();
        for _ in 0..4000 {
            bytes.extend_from_slice(b"\x92\x81\xa5Chain\x91");
        }
        // A worker's threads have 2 MiB stacks; the test's own thread may have more.
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let canvas = Codec::Msgpack
                    .decode::<Canvas>(&bytes, "workflow")
                    .map(drop);
                let frames = from_msgpack::<Vec<crate::canvas::Frame>>(&bytes).map(drop);
                (canvas.is_err(), frames.is_err())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, (true, true));
        // A workflow nested as deep as people write them still decodes.
        let mut c = Canvas::task(crate::Signature::new("t", &[1], Codec::Json).unwrap());
        for _ in 0..20 {
            c = crate::canvas::chain([
                c,
                Canvas::task(crate::Signature::new("u", &[2], Codec::Json).unwrap()),
            ]);
        }
        let bytes = Codec::Msgpack.encode(&c, "workflow").unwrap();
        assert_eq!(
            Codec::Msgpack.decode::<Canvas>(&bytes, "workflow").unwrap(),
            c
        );
    }

    #[test]
    fn transcode_between_codecs() {
        let json = br#"[1,"x",{"k":true}]"#;
        let mp = Codec::Json.transcode(json, Codec::Msgpack).unwrap();
        let back = Codec::Msgpack.transcode(&mp, Codec::Json).unwrap();
        assert_eq!(back, json);
    }
}
