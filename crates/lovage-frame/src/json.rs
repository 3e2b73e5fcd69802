//! JSON rows: `read_jsonl` (a partition per file of one JSON object per line) and
//! `Frame::from_bag` (a bag of JSON objects, Dask's `bag.to_dataframe`). Top-level fields
//! become columns of `Int64`, `Float64`, `Boolean` or `String`; a missing field or `null` is a
//! null; nested arrays and objects are an error.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use lovage_collections::bag::Bag;
use lovage_core::TaskError;
use lovage_graph::Graph;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::csv::glob_files;
use crate::frame::{Frame, Source};
use crate::{data_error, polars_error, Error};

/// Lines of the first file read to infer the column types.
const INFER_ROWS: usize = 1000;

/// The type a JSON scalar asks for (`None` for null).
fn scalar_type(v: &Value) -> Result<Option<DataType>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Bool(_) => Some(DataType::Boolean),
        Value::Number(n) if n.is_i64() => Some(DataType::Int64),
        Value::Number(_) => Some(DataType::Float64),
        Value::String(_) => Some(DataType::String),
        Value::Array(_) | Value::Object(_) => return Err("nested values are not supported".into()),
    })
}

/// The schema of `rows` (objects): fields in order of first appearance (an object's fields
/// by name, as `serde_json` keeps them); integers and floats
/// in one field give `Float64`; other mixtures are an error naming the field.
fn infer(rows: &[(usize, Value)], what: &dyn Fn(usize) -> String) -> Result<Schema, String> {
    let mut schema = Schema::default();
    for (line, row) in rows {
        let Value::Object(fields) = row else {
            return Err(format!("{}: not a JSON object", what(*line)));
        };
        for (name, v) in fields {
            let t = scalar_type(v).map_err(|e| format!("{}: field {name}: {e}", what(*line)))?;
            let name: PlSmallStr = name.as_str().into();
            let merged = match (schema.get(&name), t) {
                (None, t) => t.unwrap_or(DataType::Null),
                (Some(old), None) => old.clone(),
                (Some(DataType::Null), Some(t)) => t,
                (Some(old), Some(t)) if *old == t => t,
                (Some(DataType::Int64), Some(DataType::Float64))
                | (Some(DataType::Float64), Some(DataType::Int64)) => DataType::Float64,
                (Some(old), Some(t)) => {
                    return Err(format!(
                        "{}: field {name} is {t} here but {old} before",
                        what(*line)
                    ))
                }
            };
            schema.with_column(name, merged);
        }
    }
    // A field that was only ever null is read as strings.
    Ok(schema
        .iter()
        .map(|(n, t)| {
            let t = if *t == DataType::Null {
                DataType::String
            } else {
                t.clone()
            };
            Field::new(n.clone(), t)
        })
        .collect())
}

/// One column of `schema`'s type from `rows`; `what(line)` names a row in errors.
fn column(
    name: &PlSmallStr,
    t: &DataType,
    rows: &[(usize, Value)],
    what: &dyn Fn(usize) -> String,
) -> Result<Column, TaskError> {
    fn field<'a>(row: &'a Value, name: &str) -> Option<&'a Value> {
        row.get(name).filter(|v| !v.is_null())
    }
    let bad = |line: usize, v: &Value| {
        data_error(format!(
            "{}: field {name} is {v}, which does not fit its type {t}",
            what(line)
        ))
    };
    macro_rules! build {
        ($get:expr) => {{
            let mut out = Vec::with_capacity(rows.len());
            for (line, row) in rows {
                out.push(match field(row, name.as_str()) {
                    None => None,
                    Some(v) => Some($get(v).ok_or_else(|| bad(*line, v))?),
                });
            }
            Column::new(name.clone(), out)
        }};
    }
    Ok(match t {
        DataType::Int64 => build!(Value::as_i64),
        DataType::Float64 => build!(Value::as_f64),
        DataType::Boolean => build!(Value::as_bool),
        DataType::String => build!(|v: &Value| v.as_str().map(str::to_owned)),
        other => {
            return Err(data_error(format!(
                "column {name}: type {other} is not read from JSON"
            )))
        }
    })
}

/// A frame of `schema` from JSON objects (fields outside the schema are an error).
fn to_frame(
    rows: &[(usize, Value)],
    schema: &Schema,
    what: &dyn Fn(usize) -> String,
) -> Result<DataFrame, TaskError> {
    for (line, row) in rows {
        let Value::Object(fields) = row else {
            return Err(data_error(format!("{}: not a JSON object", what(*line))));
        };
        if let Some(extra) = fields.keys().find(|k| schema.get(k.as_str()).is_none()) {
            return Err(data_error(format!(
                "{}: field {extra} is not in the schema {:?}",
                what(*line),
                schema.iter_names().collect::<Vec<_>>()
            )));
        }
    }
    let columns = schema
        .iter()
        .map(|(n, t)| column(n, t, rows, what))
        .collect::<Result<Vec<_>, _>>()?;
    DataFrame::new(rows.len(), columns).map_err(|e| polars_error("building a frame from JSON", e))
}

/// The non-blank lines of `path` (up to `limit`), parsed, with their line numbers (from 1).
fn parse_lines(path: &PathBuf, limit: usize) -> Result<Vec<(usize, Value)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{}: not JSON: {e}", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    Ok(out)
}

/// A frame reading the files `pattern` matches, one JSON object per line (JSON Lines), a
/// partition per file. The schema comes from the first file's first 1000 lines; a row that
/// does not fit it, or a line that is not JSON, is an error with `file:line`.
pub fn read_jsonl<'g>(g: &'g Graph, pattern: &str) -> Result<Frame<'g>, Error> {
    let files = glob_files(pattern)?;
    let first = &files[0];
    let head = parse_lines(first, INFER_ROWS).map_err(Error::Input)?;
    let what = |line: usize| format!("{}:{line}", first.display());
    let schema = Arc::new(infer(&head, &what).map_err(Error::Input)?);
    let sources = files
        .into_iter()
        .map(|path| {
            Source::Jsonl(Arc::new(JsonlFile {
                path,
                schema: schema.clone(),
            }))
        })
        .collect();
    Ok(Frame::new(g, sources, schema))
}

/// One JSON Lines file of a frame, read whole with the frame's schema.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct JsonlFile {
    path: PathBuf,
    #[serde(with = "crate::data::schema_ref")]
    schema: SchemaRef,
}

impl JsonlFile {
    pub(crate) fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// The file's rows (an error names the file and line of a row that does not fit).
    pub(crate) fn read(&self) -> Result<DataFrame, TaskError> {
        let rows = parse_lines(&self.path, usize::MAX).map_err(data_error)?;
        let what = |line: usize| format!("{}:{line}", self.path.display());
        to_frame(&rows, &self.schema, &what)
    }
}

impl<'g> Frame<'g> {
    /// A frame of a bag of JSON objects, a partition per bag partition, with columns
    /// `schema` (Dask's `bag.to_dataframe(meta)`): a missing field is a null, a field not in
    /// the schema or of another type is an error naming the partition and item.
    pub fn from_bag(bag: &Bag<'g, Value>, schema: Schema) -> Result<Self, Error> {
        let schema = Arc::new(schema);
        let g = bag.graph();
        let sources = bag
            .partitions()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let schema = schema.clone();
                Source::Node(g.try_local_all(
                    "from_bag",
                    move |v: Vec<Arc<Vec<Value>>>| {
                        let items = v.into_iter().next().unwrap_or_default();
                        let rows: Vec<(usize, Value)> = items.iter().cloned().enumerate().collect();
                        let what = |item: usize| format!("bag partition {i}, item {item}");
                        to_frame(&rows, &schema, &what)
                    },
                    vec![p],
                ))
            })
            .collect();
        Ok(Frame::new(g, sources, schema))
    }
}
