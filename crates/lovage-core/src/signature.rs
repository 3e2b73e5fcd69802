//! What travels on the wire: a task name, its encoded arguments and options.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{check_version, Codec, CodecError, WIRE_VERSION};
use crate::id::TaskId;
use crate::options::TaskOptions;
use crate::retry::RetryPolicy;

/// A call to a registered task, ready to send: name, encoded arguments, codec and options.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The registered task name.
    pub task: String,
    /// The arguments, encoded with `codec`: a sequence (positional) or a map (by parameter name).
    pub args: Vec<u8>,
    /// The codec of `args` and of the result.
    pub codec: Codec,
    /// Options of this call; unset fields fall back to the task's own.
    pub options: TaskOptions,
}

impl Signature {
    /// A signature from arguments already encoded with `codec`.
    pub fn from_encoded(task: impl Into<String>, args: Vec<u8>, codec: Codec) -> Self {
        Signature {
            task: task.into(),
            args,
            codec,
            options: TaskOptions::default(),
        }
    }

    /// A signature whose arguments are `args` (a tuple, a sequence or a map) encoded with `codec`.
    pub fn new<A: Serialize + ?Sized>(
        task: impl Into<String>,
        args: &A,
        codec: Codec,
    ) -> Result<Self, CodecError> {
        let bytes = codec.encode(args, "task arguments")?;
        Ok(Self::from_encoded(task, bytes, codec))
    }

    /// Wraps this signature in a message with a fresh id.
    pub fn into_message(self) -> Message {
        Message {
            v: WIRE_VERSION,
            id: TaskId::new(),
            task: self.task,
            codec: self.codec,
            args: self.args,
            options: self.options,
        }
    }
}

/// A [`Signature`] that remembers the task's return type, so a handle can decode the result.
#[derive(Debug, Clone)]
pub struct TypedSignature<R> {
    sig: Signature,
    /// Set when the arguments could not be encoded; sending the signature fails with it.
    error: Option<CodecError>,
    ret: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> TypedSignature<R> {
    /// Tags an untyped signature with the return type `R`; nothing is checked until the result
    /// is decoded.
    pub fn new(sig: Signature) -> Self {
        TypedSignature {
            sig,
            error: None,
            ret: PhantomData,
        }
    }

    /// Encodes `args` for the task `name`. An encoding failure is kept, not raised: building a
    /// signature cannot fail, sending it reports the error (see [`TypedSignature::check`]).
    pub fn encode<A: Serialize + ?Sized>(name: &str, args: &A, codec: Codec) -> Self {
        match Signature::new(name, args, codec) {
            Ok(sig) => Self::new(sig),
            Err(e) => TypedSignature {
                sig: Signature::from_encoded(name, Vec::new(), codec),
                error: Some(e),
                ret: PhantomData,
            },
        }
    }

    /// The error from encoding the arguments, if there was one.
    pub fn check(&self) -> Result<(), CodecError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The untyped signature.
    pub fn signature(&self) -> &Signature {
        &self.sig
    }

    /// Drops the type tag.
    pub fn into_signature(self) -> Signature {
        self.sig
    }

    /// Sends to this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.sig.options.queue = Some(queue.into());
        self
    }

    /// Runs at this priority (0–9, higher first; values above 9 are capped).
    pub fn priority(mut self, priority: u8) -> Self {
        self.sig.options.priority = Some(priority.min(9));
        self
    }

    /// Kills the task after this long.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.sig.options.time_limit = Some(limit);
        self
    }

    /// Fires the task's cancel token after this long.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.sig.options.soft_time_limit = Some(limit);
        self
    }

    /// Runs no sooner than `delay` after sending (Celery's `countdown`).
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.sig.options.countdown = Some(delay);
        self
    }

    /// Runs no sooner than `at` (Celery's `eta`).
    pub fn eta(mut self, at: std::time::SystemTime) -> Self {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.sig.options.eta = Some(ms);
        self
    }

    /// Is dropped (REVOKED) if not started within `after` of sending (Celery's `expires`).
    pub fn expires(mut self, after: Duration) -> Self {
        self.sig.options.expires = Some(after);
        self
    }

    /// Replaces every option set so far with `options`.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.sig.options = options;
        self
    }

    /// Holds `units` of the abstract resource `name` while it runs (Dask's
    /// `resources={'GPU': 1}`): only workers started with `--resources name=N` (N ≥ units)
    /// run it, and each runs at most as many at once as its units allow. `units` is whole
    /// (`1`) or fractional with at most 3 decimals (`0.5`, `"0.25"`): two `0.5` calls share
    /// one unit. Call it once per resource. A bad name or amount (0, negative, NaN, more than
    /// 3 decimals) makes sending fail (see [`check`](Self::check)).
    pub fn resource(mut self, name: &str, units: impl crate::resources::IntoResourceUnits) -> Self {
        let units = units
            .into_resource_units()
            .map_err(|e| format!("resource {name}: {e}"))
            .and_then(|units| {
                let one = crate::options::Resources::from([(name.to_owned(), units)]);
                crate::options::check_resources(&one).map(|()| units)
            });
        match units {
            Ok(units) => {
                self.sig
                    .options
                    .resources
                    .get_or_insert_with(Default::default)
                    .insert(name.to_owned(), units);
            }
            Err(e) => {
                self.error.get_or_insert(CodecError::InvalidOption {
                    option: "resources",
                    reason: e,
                });
            }
        }
        self
    }

    /// Retries with this policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.sig.options.retry = Some(policy);
        self
    }

    /// Re-encodes the arguments with another codec; the result will use it too.
    pub fn codec(mut self, codec: Codec) -> Result<Self, CodecError> {
        self.check()?;
        self.sig.args = self.sig.codec.transcode(&self.sig.args, codec)?;
        self.sig.codec = codec;
        self.sig.options.codec = Some(codec);
        Ok(self)
    }

    /// Decodes a result produced for this signature.
    pub fn decode_result(&self, bytes: &[u8]) -> Result<R, CodecError> {
        self.sig.codec.decode(bytes, "task result")
    }
}

/// A task message as a broker stores it: a version, an id and a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Wire format version ([`WIRE_VERSION`] when written by this build).
    pub v: u32,
    /// The task's id.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Codec of `args` and of the message itself.
    pub codec: Codec,
    /// Encoded arguments; embedded as plain JSON when the codec is JSON.
    #[serde(serialize_with = "ser_args", deserialize_with = "de_args")]
    pub args: Vec<u8>,
    /// Options of this call.
    #[serde(default)]
    pub options: TaskOptions,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

impl Message {
    /// Encodes the message with its own codec.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.codec.encode(self, "task message")
    }

    /// Decodes a message written with `codec`, refusing one from a newer wire version.
    pub fn decode(bytes: &[u8], codec: Codec) -> Result<Message, CodecError> {
        let probe: VersionProbe = codec.decode(bytes, "task message header")?;
        check_version(probe.v)?;
        codec.decode(bytes, "task message")
    }

    /// The signature inside the message.
    pub fn signature(&self) -> Signature {
        Signature {
            task: self.task.clone(),
            args: self.args.clone(),
            codec: self.codec,
            options: self.options.clone(),
        }
    }
}

pub(crate) fn ser_args<S: Serializer>(args: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        let text = std::str::from_utf8(args).map_err(serde::ser::Error::custom)?;
        let raw = serde_json::value::RawValue::from_string(text.to_owned())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    } else {
        s.serialize_bytes(args)
    }
}

pub(crate) fn de_args<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    if d.is_human_readable() {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(raw.get().as_bytes().to_vec())
    } else {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("encoded task arguments")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_both_codecs_and_json_stays_readable() {
        for codec in [Codec::Json, Codec::Msgpack] {
            let mut sig = Signature::new("tasks::add", &(1, 2), codec).unwrap();
            sig.options.queue = Some("q".into());
            let msg = sig.into_message();
            let bytes = msg.encode().unwrap();
            if codec == Codec::Json {
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(text.contains(r#""args":[1,2]"#), "{text}");
            }
            assert_eq!(Message::decode(&bytes, codec).unwrap(), msg);
        }
    }

    #[test]
    fn a_newer_message_is_refused_with_a_clear_error() {
        let text = r#"{"v":99,"id":"0190b5f0-0000-7000-8000-000000000000","task":"t","codec":"json","args":[],"future_field":1}"#;
        let err = Message::decode(text.as_bytes(), Codec::Json).unwrap_err();
        assert!(
            matches!(err, CodecError::NewerVersion { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn typed_signature_transcodes_and_decodes() {
        let t: TypedSignature<i64> =
            TypedSignature::new(Signature::new("t", &(40, 2), Codec::Json).unwrap());
        let t = t.codec(Codec::Msgpack).unwrap().priority(42);
        assert_eq!(t.signature().options.priority, Some(9));
        let back: (i64, i64) = Codec::Msgpack.decode(&t.signature().args, "args").unwrap();
        assert_eq!(back, (40, 2));
        assert_eq!(
            t.decode_result(&Codec::Msgpack.encode(&42i64, "r").unwrap())
                .unwrap(),
            42
        );
    }
}
