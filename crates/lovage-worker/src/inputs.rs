//! A task's inputs that other workers keep (the data plane): a dependent's arguments carry
//! references (`{"lovage.ref": ...}`), and the worker about to run it puts each referenced
//! value in its place, read from the keeper's file on this host or its HTTP endpoint.
//!
//! A value whose worker is gone (killed, stopped, or its copy damaged) is made again here from
//! the task recorded in its reference (lineage): its own inputs resolved the same way, then
//! the registered task run on this thread, up to `1 + max_retries` times by the task's own
//! retry policy. Only when that fails too does the dependent fail, naming the lost value.

use lovage_broker::dataref::{may_hold_refs, refs_in, resolve_value, Lineage};
use lovage_broker::{Envelope, FetchError, ResultRef};
use lovage_core::registry::Registry;
use lovage_core::{kinds, TaskError};
use serde_json::Value;

use crate::data::DataStore;

/// The error kind of a task whose input could neither be fetched nor made again.
pub const INPUT_LOST: &str = "lovage.InputLost";

/// How deep lineage goes: a lost value whose inputs are lost too, and so on.
const MAX_DEPTH: usize = 16;

/// `env`'s arguments with every reference replaced by its value; `None` when they hold none
/// (the envelope's own bytes are used as they are). A value this worker's own store holds
/// (`own`: it made it, or a broadcast copied it here) is read in place, not fetched.
pub(crate) fn resolve_args(
    env: &Envelope,
    own: Option<&DataStore>,
) -> Result<Option<Vec<u8>>, TaskError> {
    if !may_hold_refs(&env.args) {
        return Ok(None);
    }
    let mut args: Value = env
        .codec
        .decode(&env.args, "task arguments")
        .map_err(TaskError::from)?;
    let replaced = resolve_value(
        &mut args,
        &mut |r| match own.and_then(|store| store.read_own(r)) {
            Some(value) => value,
            None => fetch_or_remake(r, 0),
        },
    )
    .map_err(|e| TaskError::new(INPUT_LOST, e.to_string()))?;
    if replaced == 0 {
        return Ok(None);
    }
    env.codec
        .encode(&args, "task arguments")
        .map(Some)
        .map_err(TaskError::from)
}

/// The bytes of the kept values `env`'s arguments reference (0 when none): what resolving
/// them reads. Arguments that do not decode count 0 (resolving them fails anyway).
pub(crate) fn input_bytes(env: &Envelope) -> u64 {
    if !may_hold_refs(&env.args) {
        return 0;
    }
    let Ok(args) = env.codec.decode::<Value>(&env.args, "task arguments") else {
        return 0;
    };
    let mut refs = Vec::new();
    refs_in(&args, &mut refs);
    refs.iter().map(|r| r.size).sum()
}

/// The value `r` stands for: fetched, or made again from its lineage if it cannot be.
fn fetch_or_remake(r: &ResultRef, depth: usize) -> Result<Value, FetchError> {
    let lost = match r.fetch_value() {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Some(lineage) = &r.lineage else {
        return Err(lost);
    };
    if depth >= MAX_DEPTH {
        return Err(lost);
    }
    tracing::warn!(key = %r.key, worker = %r.worker, task = %lineage.task, error = %lost, "an input is lost with its worker; making it again from its task");
    remake(r, lineage, depth).map_err(|reason| FetchError::Unreachable {
        key: r.key.clone(),
        worker: r.worker.clone(),
        addr: r.addr.clone(),
        reason: format!(
            "{lost}; making it again from {} failed: {reason}",
            lineage.task
        ),
    })
}

/// Runs `lineage`'s task here (its own lost inputs made again first), within its retries.
fn remake(r: &ResultRef, lineage: &Lineage, depth: usize) -> Result<Value, String> {
    let entry = Registry::global()
        .get(&lineage.task)
        .map_err(|e| e.to_string())?;
    let tries = 1 + (entry.options)().retry.map_or(0, |p| p.max_retries);
    let mut args = lineage.args.clone();
    resolve_value(&mut args, &mut |inner| fetch_or_remake(inner, depth + 1))
        .map_err(|e| e.to_string())?;
    let encoded = r
        .codec
        .encode(&args, "task arguments")
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..tries {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entry.call_blocking(&encoded, r.codec)
        }));
        match ran {
            Ok(Ok(bytes)) => {
                let whole = r.codec.decode::<Value>(&bytes, "a remade value");
                let whole = whole.map_err(|e| e.to_string())?;
                return match r.item {
                    None => Ok(whole),
                    // The reference stood for one element of the value.
                    Some(item) => match whole {
                        Value::Array(mut items) if (item.index as usize) < items.len() => {
                            Ok(items.swap_remove(item.index as usize))
                        }
                        _ => Err(format!(
                            "the remade value has no element {} (a list was expected)",
                            item.index
                        )),
                    },
                };
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = TaskError::new(kinds::PANIC, "the task panicked").to_string(),
        }
    }
    Err(last)
}
