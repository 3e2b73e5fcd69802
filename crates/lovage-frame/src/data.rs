//! A partition as data, and frames as text, for the `lovage.frame.*` tasks: what crosses to a
//! process pool or a broker's workers instead of a closure.
//!
//! Everything here travels as a JSON value at some point (the broker's graph splices a node's
//! result into the next node's arguments as one, and records a kept value's lineage as one),
//! and JSON has no bytes. So a plan and a frame are packed once into bytes (MessagePack of
//! Polars' own serde for a plan; Arrow IPC, Polars' `IpcWriter`, for a frame) and those bytes
//! travel as one base64 string: a third larger, but a single string wherever it goes, never a
//! list of numbers.

use std::io::Cursor;
use std::sync::Arc;

use base64::Engine;
use lovage_core::TaskError;
use lovage_graph::Delayed;
use polars::prelude::*;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::csv::CsvRange;
use crate::frame::{run_plan, run_plan_then, LazyPlan, Op, Part, Source};
use crate::json::JsonlFile;
use crate::parquet::RowGroup;

/// Where a partition's rows come from, as data (see `frame::Source`).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum DataSource {
    /// Rows given here (`from_polars`, `from_partitions`): they travel with every call.
    Memory(#[serde(with = "ipc_frame")] DataFrame),
    /// A byte range of a CSV file, read where the task runs.
    Csv(CsvRange),
    /// A row group of a Parquet file, read where the task runs.
    Parquet(RowGroup),
    /// A JSON Lines file, read where the task runs.
    Jsonl(JsonlFile),
    /// Another task's result (a join's output partition): the task gets it as its `input`
    /// argument, fetched from the worker that keeps it when it is large (the data plane).
    Input,
}

/// Partition sources (a CSV byte range, a Parquet row group, a JSON Lines file, rows given
/// in memory) read by the `lovage.frame.*` tasks in this process.
static SOURCES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many partition sources (a CSV byte range, a Parquet row group, a JSON Lines file, or
/// rows given in memory) the `lovage.frame.*` tasks run in this process have read so far:
/// for tests and benchmarks of how often a plan reads its data (a sort reads each once).
pub fn sources_read() -> u64 {
    SOURCES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// A partition as data: its source and its plan.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct PartData {
    pub(crate) source: DataSource,
    pub(crate) ops: Vec<Op>,
}

impl PartData {
    /// The partition's rows: its source read (or `input`, the rows of an `Input` source)
    /// and its plan run.
    pub(crate) fn rows(self, input: Vec<Ipc>) -> Result<DataFrame, TaskError> {
        self.rows_then(input, None)
    }

    /// The partition's rows with `then` (a partial aggregation) run after its plan in the
    /// same Polars query (see `Part::run_then`), or just its rows when `then` is `None`.
    pub(crate) fn rows_then(
        self,
        input: Vec<Ipc>,
        then: Option<&LazyPlan>,
    ) -> Result<DataFrame, TaskError> {
        let source = match self.source {
            DataSource::Memory(df) => Source::Memory(df),
            DataSource::Csv(r) => Source::Csv(Arc::new(r)),
            DataSource::Parquet(r) => Source::Parquet(Arc::new(r)),
            DataSource::Jsonl(f) => Source::Jsonl(Arc::new(f)),
            DataSource::Input => {
                let rows = input.into_iter().next().ok_or_else(|| {
                    crate::data_error("internal: a partition of another task's rows lost them")
                })?;
                let what = "a partition of another task's rows";
                return match then {
                    Some(then) => run_plan_then(rows.0, &self.ops, then, what),
                    None => run_plan(rows.0, &self.ops, what),
                };
            }
        };
        SOURCES_READ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let part = Part {
            source,
            ops: Arc::new(self.ops),
        };
        match then {
            Some(then) => part.run_then(None, then),
            None => part.run(None),
        }
    }
}

/// A partition as the arguments of a `lovage.frame.*` task: its source and plan, and the
/// node whose result holds its rows when the source is another task's (`DataSource::Input`).
#[derive(Clone)]
pub(crate) struct TaskPart {
    pub(crate) data: PartData,
    pub(crate) input: Vec<Delayed<Ipc>>,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// A value packed as MessagePack (Polars' serde for the `Expr`s in a plan) in one base64
/// string.
#[derive(Clone)]
pub(crate) struct Packed<T>(pub(crate) T);

impl<T: Serialize> Serialize for Packed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = rmp_serde::to_vec_named(&self.0).map_err(S::Error::custom)?;
        s.serialize_str(&b64().encode(bytes))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Packed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = b64().decode(text).map_err(D::Error::custom)?;
        rmp_serde::from_slice(&bytes)
            .map(Packed)
            .map_err(D::Error::custom)
    }
}

/// A frame as one Arrow IPC stream in a base64 string: a partial result between the
/// `lovage.frame.*` tasks.
#[derive(Clone)]
pub(crate) struct Ipc(pub(crate) DataFrame);

impl Serialize for Ipc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ipc_frame::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Ipc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ipc_frame::deserialize(d).map(Ipc)
    }
}

impl Ipc {
    /// The frame, for the tasks' bodies.
    pub(crate) fn into_inner(self) -> DataFrame {
        self.0
    }
}

/// A `DataFrame` field as Arrow IPC (Polars' `IpcWriter`, uncompressed: a value read on the
/// same host is read from a file, where compressing would only cost time) in base64
/// (`#[serde(with)]`).
pub(crate) mod ipc_frame {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(df: &DataFrame, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        polars_io::ipc::IpcWriter::new(&mut bytes)
            .finish(&mut df.clone())
            .map_err(|e| S::Error::custom(format!("encoding a frame as Arrow IPC: {e}")))?;
        s.serialize_str(&b64().encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DataFrame, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = b64().decode(text).map_err(D::Error::custom)?;
        polars_io::ipc::IpcReader::new(Cursor::new(bytes))
            .finish()
            .map_err(|e| D::Error::custom(format!("decoding a frame from Arrow IPC: {e}")))
    }
}

/// A `SchemaRef` field (`#[serde(with)]`): serde's `Arc` support is a feature the workspace
/// does not turn on.
pub(crate) mod schema_ref {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(schema: &SchemaRef, s: S) -> Result<S::Ok, S::Error> {
        (**schema).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SchemaRef, D::Error> {
        Schema::deserialize(d).map(Arc::new)
    }
}
