//! Items as JSON values, as the reductions of a data bag see them: numbers for `sum` and
//! `mean`, the order `min`, `max` and `top_k` use, and the text `to_textfiles` writes.

use std::cmp::Ordering;
use std::io::Write;

use lovage_core::TaskError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data_error;

/// A sum so far: exact while every item is an integer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Num {
    Int(i64),
    /// An `f64`'s bits (JSON carries neither NaN nor infinities).
    Float(u64),
}

/// An item as a number, for `sum` and `mean`.
pub(crate) fn number(x: &Value, what: &str) -> Result<Num, TaskError> {
    match x {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Num::Int(i)),
            (None, Some(f)) if !n.is_u64() => Ok(Num::Float(f.to_bits())),
            _ => Err(data_error(format!(
                "{what}: the item {n} is above i64::MAX"
            ))),
        },
        other => Err(data_error(format!(
            "{what}: an item is not a number: {other}"
        ))),
    }
}

/// `a + b`, in integers while both are (an overflow fails, as it would panic in Rust).
pub(crate) fn add_num(a: Num, b: Num) -> Result<Num, TaskError> {
    let f = |n: Num| match n {
        Num::Int(i) => i as f64,
        Num::Float(bits) => f64::from_bits(bits),
    };
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x
            .checked_add(y)
            .map(Num::Int)
            .ok_or_else(|| data_error("sum: the integers overflow i64")),
        _ => Ok(Num::Float((f(a) + f(b)).to_bits())),
    }
}

/// The error for two items (or keys) that do not compare.
pub(crate) fn incomparable(what: &str, a: &Value, b: &Value) -> TaskError {
    data_error(format!(
        "{what}: the items {a} and {b} do not compare (numbers, strings, booleans and lists do)"
    ))
}

/// The order of two items as Rust orders the types they come from: numbers by value, strings
/// by bytes, lists (tuples, `Vec`s) element by element, `false < true`; `None` for values that
/// do not compare.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    Some(match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i.cmp(&j),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?)?,
            },
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q)? {
                    Ordering::Equal => {}
                    o => return Some(o),
                }
            }
            x.len().cmp(&y.len())
        }
        _ => return None,
    })
}

/// Writes an item as a line, as `Display` writes the Rust types it comes from: a string as
/// itself, a number as Rust prints it, anything else as its JSON text.
pub(crate) fn write_line(out: &mut impl Write, x: &Value) -> std::io::Result<()> {
    match x {
        Value::String(s) => writeln!(out, "{s}"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => writeln!(out, "{i}"),
            (None, Some(u), _) => writeln!(out, "{u}"),
            (None, None, Some(f)) => writeln!(out, "{f}"),
            _ => writeln!(out, "{n}"),
        },
        other => writeln!(out, "{other}"),
    }
}
