//! One block's values, and how a block travels as task data.
//!
//! Between processes (a process pool's children, a broker's workers) a block is its raw
//! little-endian `f64` bytes behind a small header (magic, version, dtype, shape), encoded
//! once. The broker splices a node's result into the next node's arguments as a JSON value,
//! and JSON has no bytes, so those bytes travel as one base64 string (as a frame's Arrow IPC
//! stream does, `lovage-frame`'s `data.rs`): a third larger, but one string wherever it goes,
//! never a list of numbers, and never re-encoded on the way.

use std::ops::Deref;
use std::sync::Arc;

use base64::Engine;
use ndarray::{ArrayD, IxDyn};
use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first bytes of an encoded block.
const MAGIC: &[u8; 4] = b"LVAB";
/// The encoding's version (a reader refuses another).
const VERSION: u8 = 1;
/// The one element type: `f64`, little-endian (NumPy's `<f8`).
const DTYPE_F64_LE: u8 = 1;

/// One block's values, in standard (row-major) layout: shared, never copied between the tasks
/// of one process. Dereferences to the `ndarray` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Block(Arc<ArrayD<f64>>);

impl Block {
    /// A block of `a`'s values (copied into row-major order if `a` is not).
    pub fn new(a: ArrayD<f64>) -> Self {
        if a.is_standard_layout() {
            Block(Arc::new(a))
        } else {
            Block(Arc::new(a.as_standard_layout().into_owned()))
        }
    }

    /// The values, row-major (a block is always contiguous).
    pub fn values(&self) -> &[f64] {
        // A block is made by `new`, always in standard layout.
        self.0.as_slice().unwrap_or(&[])
    }

    /// The block as raw bytes: header, then the values as little-endian `f64`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = self.0.shape();
        let mut out = Vec::with_capacity(8 + 8 * shape.len() + 8 * self.0.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(DTYPE_F64_LE);
        out.extend_from_slice(&(shape.len() as u16).to_le_bytes());
        for &n in shape {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for x in self.values() {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// A block from what [`to_bytes`](Block::to_bytes) wrote; an error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let head = bytes
            .get(..8)
            .ok_or_else(|| format!("an array block of {} bytes has no header", bytes.len()))?;
        if &head[..4] != MAGIC {
            return Err("not an array block (its magic bytes are wrong)".into());
        }
        if head[4] != VERSION {
            return Err(format!(
                "array block format version {} (this build reads {VERSION})",
                head[4]
            ));
        }
        if head[5] != DTYPE_F64_LE {
            return Err(format!(
                "array block element type {} (only f64 is known)",
                head[5]
            ));
        }
        let ndim = u16::from_le_bytes([head[6], head[7]]) as usize;
        let dims = bytes
            .get(8..8 + 8 * ndim)
            .ok_or_else(|| format!("an array block's header is cut short ({ndim} axes)"))?;
        let shape: Vec<usize> = dims
            .chunks_exact(8)
            .map(|d| u64::from_le_bytes(d.try_into().unwrap_or([0; 8])) as usize)
            .collect();
        let data = &bytes[8 + 8 * ndim..];
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("array block shape {shape:?} is too large"))?;
        if data.len() != 8 * n {
            return Err(format!(
                "array block of shape {shape:?} carries {} bytes of values, not {}",
                data.len(),
                8 * n
            ));
        }
        let values: Vec<f64> = data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map(Block::new)
            .map_err(|e| format!("array block of shape {shape:?}: {e}"))
    }
}

impl Deref for Block {
    type Target = ArrayD<f64>;
    fn deref(&self) -> &ArrayD<f64> {
        &self.0
    }
}

impl From<ArrayD<f64>> for Block {
    fn from(a: ArrayD<f64>) -> Self {
        Block::new(a)
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64().encode(self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlockVisitor;
        impl Visitor<'_> for BlockVisitor {
            type Value = Block;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array block (base64 text of its raw bytes)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Block, E> {
                let bytes = b64()
                    .decode(v)
                    .map_err(|e| E::custom(format!("an array block's base64: {e}")))?;
                Block::from_bytes(&bytes).map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Block, E> {
                Block::from_bytes(v).map_err(E::custom)
            }
        }
        d.deserialize_str(BlockVisitor).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lovage_core::Codec;

    #[test]
    fn a_block_round_trips_as_raw_bytes_in_either_codec() {
        let a = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| i[0] as f64 * 10.0 + i[1] as f64);
        let mut a = a.mapv(|x| x / 3.0);
        a[[0, 0]] = f64::NAN;
        a[[1, 1]] = f64::NEG_INFINITY;
        let b = Block::new(a);
        let bytes = b.to_bytes();
        // Header (8 bytes, then 8 per axis), then 8 bytes per value: raw, not a list of numbers.
        assert_eq!(bytes.len(), 8 + 16 + 8 * 12);
        assert_eq!(&bytes[8 + 24..8 + 32], &(1.0f64 / 3.0).to_le_bytes());
        for codec in [Codec::Json, Codec::Msgpack] {
            let enc = codec.encode(&b, "block").unwrap();
            let back: Block = codec.decode(&enc, "block").unwrap();
            assert_eq!(back.shape(), b.shape());
            let same = back
                .values()
                .iter()
                .zip(b.values())
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{codec}");
            // Through a JSON value, as a broker's graph carries it.
            let v: serde_json::Value = codec.decode(&enc, "block").unwrap();
            assert!(v.is_string(), "{v}");
        }
    }

    #[test]
    fn a_damaged_block_says_what_is_wrong() {
        let b = Block::new(ArrayD::zeros(IxDyn(&[2, 2])));
        let mut bytes = b.to_bytes();
        bytes.pop();
        let err = Block::from_bytes(&bytes).unwrap_err();
        assert!(err.contains("carries 31 bytes of values, not 32"), "{err}");
        assert!(Block::from_bytes(b"nope").unwrap_err().contains("header"));
        let err = Block::from_bytes(b"XXXX\x01\x01\x00\x00").unwrap_err();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn a_block_in_another_layout_is_made_row_major() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f64);
        let t = a.t().to_owned();
        let b = Block::new(t.clone());
        assert_eq!(b.values(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(*b, t);
    }
}
