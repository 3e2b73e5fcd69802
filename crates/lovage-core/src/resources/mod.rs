//! Abstract resources (Dask's `resources={'GPU': 0.5}`): what a task holds while it runs and
//! what a worker has, name → [`ResourceUnits`], and the queue a task needing them waits in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

pub(crate) mod text;

use text::{MAX_MILLI, MILLI};

/// Resources a task needs or a worker has: name → units.
pub type Resources = BTreeMap<String, ResourceUnits>;

/// Most resource names one worker may declare: it consumes one queue per non-empty subset
/// of its names (2^n − 1 per queue), so this bounds that to 15.
pub const MAX_WORKER_RESOURCES: usize = 4;

/// An amount of one resource: whole or fractional units with at most 3 decimals (`2`, `0.5`),
/// kept as whole thousandths so that taking and giving back amounts never drifts (0.1 + 0.2
/// is exactly 0.3 here). Written `2` or `0.5` as text; on the wire a whole amount is an
/// integer (what records from before fractions hold) and a fractional one a float.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceUnits(u64);

impl ResourceUnits {
    /// No units.
    pub const ZERO: ResourceUnits = ResourceUnits(0);

    /// `n` whole units.
    pub const fn whole(n: u32) -> ResourceUnits {
        ResourceUnits(n as u64 * MILLI)
    }

    /// `milli` thousandths of a unit (`500` is 0.5). Not checked here: [`check_resources`]
    /// refuses more than `u32::MAX` units.
    pub const fn from_milli(milli: u64) -> ResourceUnits {
        ResourceUnits(milli)
    }

    /// The amount in thousandths of a unit.
    pub const fn milli(self) -> u64 {
        self.0
    }

    /// Whether this is no units at all.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The whole units in it, rounded down (`1.5` → 1).
    pub const fn whole_part(self) -> u64 {
        self.0 / MILLI
    }

    /// `self − other`, or None when `other` is more.
    pub fn checked_sub(self, other: ResourceUnits) -> Option<ResourceUnits> {
        self.0.checked_sub(other.0).map(ResourceUnits)
    }

    /// `self + other`, capped at the largest amount rather than wrapping.
    pub fn saturating_add(self, other: ResourceUnits) -> ResourceUnits {
        ResourceUnits(self.0.saturating_add(other.0))
    }

    /// The amount a float stands for (as JSON or MessagePack carry a fractional one, or a
    /// Rust caller writes `0.5`): finite, not negative, at most 3 decimals.
    pub fn from_f64(v: f64) -> Result<ResourceUnits, String> {
        if !v.is_finite() || v < 0.0 {
            return Err(format!(
                "{v} is not a number of units (give a finite amount more than 0)"
            ));
        }
        let scaled = v * MILLI as f64;
        if scaled > MAX_MILLI as f64 {
            return Err(format!("{v} is too many units (at most {})", u32::MAX));
        }
        let milli = scaled.round();
        // `v * 1000` is off by at most a few ulps from the decimal it was written as.
        if (scaled - milli).abs() > (scaled * 4.0 * f64::EPSILON).max(1e-9) {
            return Err(format!(
                "{v} has more than 3 decimals (units are counted in thousandths)"
            ));
        }
        Ok(ResourceUnits(milli as u64))
    }
}

impl fmt::Display for ResourceUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / MILLI, self.0 % MILLI);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for ResourceUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for ResourceUnits {
    type Err = String;

    /// `2`, `0.5`, `1.25`: at most 3 decimals, not negative (0 parses; see [`check_resources`]).
    fn from_str(s: &str) -> Result<Self, String> {
        text::parse_units(s).map(ResourceUnits)
    }
}

impl From<u32> for ResourceUnits {
    fn from(n: u32) -> Self {
        ResourceUnits::whole(n)
    }
}

/// What [`TypedSignature::resource`](crate::TypedSignature::resource) takes as an amount:
/// `1` (whole units), `0.5`, `"0.5"` or a [`ResourceUnits`]. A bad amount (NaN, negative, more
/// than 3 decimals) makes sending fail with the reason.
pub trait IntoResourceUnits {
    /// The amount, or why it is not one.
    fn into_resource_units(self) -> Result<ResourceUnits, String>;
}

impl IntoResourceUnits for ResourceUnits {
    fn into_resource_units(self) -> Result<ResourceUnits, String> {
        Ok(self)
    }
}

impl IntoResourceUnits for u32 {
    fn into_resource_units(self) -> Result<ResourceUnits, String> {
        Ok(ResourceUnits::whole(self))
    }
}

impl IntoResourceUnits for f64 {
    fn into_resource_units(self) -> Result<ResourceUnits, String> {
        ResourceUnits::from_f64(self)
    }
}

impl IntoResourceUnits for &str {
    fn into_resource_units(self) -> Result<ResourceUnits, String> {
        self.parse()
    }
}

impl Serialize for ResourceUnits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % MILLI == 0 {
            s.serialize_u64(self.0 / MILLI)
        } else {
            // The shortest float text for a thousandths value reads back to the same value.
            s.serialize_f64(self.0 as f64 / MILLI as f64)
        }
    }
}

impl<'de> Deserialize<'de> for ResourceUnits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ResourceUnits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of resource units (e.g. 2 or 0.5)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ResourceUnits, E> {
                if v > u64::from(u32::MAX) {
                    return Err(E::custom(format!(
                        "{v} is too many units (at most {})",
                        u32::MAX
                    )));
                }
                Ok(ResourceUnits(v * MILLI))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ResourceUnits, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is negative (units are more than 0)")))?;
                self.visit_u64(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ResourceUnits, E> {
                ResourceUnits::from_f64(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ResourceUnits, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks a resource name: 1–64 characters of `[A-Za-z0-9_.-]` (it becomes part of a queue
/// name, see [`resource_queue`]).
pub fn check_resource_name(name: &str) -> Result<(), String> {
    text::name_error(name).map_or(Ok(()), Err)
}

/// Checks resources as a call or a worker gives them: valid names, more than 0 units each
/// (and at most `u32::MAX`).
pub fn check_resources(resources: &Resources) -> Result<(), String> {
    for (name, units) in resources {
        check_resource_name(name)?;
        if let Some(e) = text::amount_error(name, units.0) {
            return Err(e);
        }
    }
    Ok(())
}

/// Parses resources written as on the command line: `gpu=2, mem=0.5,fpga` (a bare name is
/// 1 unit; at most 3 decimals).
pub fn parse_resources(text: &str) -> Result<Resources, String> {
    let pairs = text::parse_list(text).map_err(|e| format!("resources {text:?}: {e}"))?;
    Ok(pairs
        .into_iter()
        .map(|(n, m)| (n, ResourceUnits(m)))
        .collect())
}

/// The queue a task needing `names` (sorted, as a [`Resources`] map keeps them) waits in
/// when sent to `queue`: `queue[gpu]`, `queue[gpu,mem]`. Only workers that declared every one
/// of those resources consume it, so a worker without them never even reserves the task; the
/// amounts travel in the task's options and the worker that reserves it counts its units.
pub fn resource_queue<'a>(queue: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::with_capacity(queue.len() + 8);
    out.push_str(queue);
    out.push('[');
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests;
