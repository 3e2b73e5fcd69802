//! `read_parquet`: a partition per row group, row counts and min/max statistics from the
//! footers (used by `len` and to skip row groups a filter rules out).

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::Graph;
use polars::prelude::*;
use polars_parquet::parquet::statistics::Statistics;

use crate::csv::glob_files;
use crate::frame::{Frame, Source};
use crate::{polars_error, Error};

/// A column's smallest and largest value in a row group, from the footer.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub(crate) enum Bound {
    Int(i64),
    Float(f64),
    Str(String),
}

/// One row group of a Parquet file.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RowGroup {
    path: PathBuf,
    index: usize,
    /// Rows in the file before this row group.
    offset: usize,
    pub(crate) rows: usize,
    /// Per column, (min, max) when the footer has them (only the graph's builder reads
    /// them, so they do not travel).
    #[serde(skip)]
    stats: HashMap<String, (Bound, Bound)>,
}

/// A frame reading the Parquet files `pattern` matches, one partition per row group. Every
/// file must have the first file's schema (names, order and types).
pub fn read_parquet<'g>(g: &'g Graph, pattern: &str) -> Result<Frame<'g>, Error> {
    let files = glob_files(pattern)?;
    let mut schema: Option<(SchemaRef, PathBuf)> = None;
    let mut sources = Vec::new();
    for path in files {
        let file =
            File::open(&path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        let mut reader = ParquetReader::new(file);
        let bad = |e: PolarsError| {
            Error::Input(format!(
                "{}: not a readable Parquet file: {e}",
                path.display()
            ))
        };
        let arrow = reader.schema().map_err(bad)?;
        let file_schema: SchemaRef = Arc::new(Schema::from_arrow_schema(&arrow));
        let metadata = reader.get_metadata().map_err(bad)?.clone();
        match &schema {
            None => schema = Some((file_schema.clone(), path.clone())),
            Some((first, first_path)) => {
                if let Some(diff) = schema_difference(first, &file_schema) {
                    return Err(Error::Input(format!(
                        "{}: schema differs from {}'s: {diff}",
                        path.display(),
                        first_path.display()
                    )));
                }
            }
        }
        let mut offset = 0;
        for (index, rg) in metadata.row_groups.iter().enumerate() {
            let mut stats = HashMap::new();
            for (name, dtype) in file_schema.iter() {
                let Some(mut cols) = rg.columns_under_root_iter(name) else {
                    continue;
                };
                let (Some(col), None) = (cols.next(), cols.next()) else {
                    continue;
                };
                if let Some(Ok(s)) = col.statistics(&metadata.footer_buf) {
                    if let Some(b) = bounds(&s, dtype) {
                        stats.insert(name.to_string(), b);
                    }
                }
            }
            sources.push(Source::Parquet(Arc::new(RowGroup {
                path: path.clone(),
                index,
                offset,
                rows: rg.num_rows(),
                stats,
            })));
            offset += rg.num_rows();
        }
    }
    let (schema, _) = schema.ok_or_else(|| Error::Input(format!("no file matches {pattern:?}")))?;
    Ok(Frame::new(g, sources, schema))
}

/// How `other` differs from `first`, if it does.
fn schema_difference(first: &Schema, other: &Schema) -> Option<String> {
    for (name, dtype) in first.iter() {
        match other.get(name) {
            None => return Some(format!("column {name:?} is missing")),
            Some(d) if d != dtype => {
                return Some(format!("column {name:?} is {d} here and {dtype} there"))
            }
            Some(_) => {}
        }
    }
    for name in other.iter_names() {
        if first.get(name).is_none() {
            return Some(format!("column {name:?} is extra"));
        }
    }
    let (a, b): (Vec<_>, Vec<_>) = (first.iter_names().collect(), other.iter_names().collect());
    (a != b).then(|| format!("the columns are in another order: {b:?} against {a:?}"))
}

/// A footer statistic as bounds comparable with a filter's literals.
fn bounds(s: &Statistics, dtype: &DataType) -> Option<(Bound, Bound)> {
    match (s, dtype) {
        (Statistics::Int64(p), DataType::Int64) => {
            Some((Bound::Int(p.min_value?), Bound::Int(p.max_value?)))
        }
        (Statistics::Int32(p), DataType::Int32) => Some((
            Bound::Int(p.min_value?.into()),
            Bound::Int(p.max_value?.into()),
        )),
        (Statistics::Double(p), DataType::Float64) => {
            Some((Bound::Float(p.min_value?), Bound::Float(p.max_value?)))
        }
        (Statistics::Float(p), DataType::Float32) => Some((
            Bound::Float(p.min_value?.into()),
            Bound::Float(p.max_value?.into()),
        )),
        (Statistics::Binary(b), DataType::String) => Some((
            Bound::Str(String::from_utf8(b.min_value.clone()?).ok()?),
            Bound::Str(String::from_utf8(b.max_value.clone()?).ok()?),
        )),
        _ => None,
    }
}

/// A literal as a bound of the same kind as `like`, if it is one.
fn literal_bound(e: &Expr, like: &Bound) -> Option<Bound> {
    let Expr::Literal(lit) = e else { return None };
    let v = lit.to_any_value()?;
    match like {
        Bound::Int(_) => v
            .extract::<i64>()
            .map(Bound::Int)
            .or_else(|| v.extract::<f64>().map(Bound::Float)),
        Bound::Float(_) => v.extract::<f64>().map(Bound::Float),
        Bound::Str(_) => v.get_str().map(|s| Bound::Str(s.to_string())),
    }
}

/// Compares two bounds, an integer with a float as floats.
fn cmp(a: &Bound, b: &Bound) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Bound::Int(x), Bound::Float(y)) => (*x as f64).partial_cmp(y),
        (Bound::Float(x), Bound::Int(y)) => x.partial_cmp(&(*y as f64)),
        _ => a.partial_cmp(b),
    }
}

impl RowGroup {
    pub(crate) fn describe(&self) -> String {
        format!("{} row group {}", self.path.display(), self.index)
    }

    pub(crate) fn read(&self) -> Result<DataFrame, TaskError> {
        let file = File::open(&self.path)
            .map_err(|e| TaskError::new("IoError", format!("{}: {e}", self.path.display())))?;
        ParquetReader::new(file)
            .with_slice(Some((self.offset, self.rows)))
            .read_parallel(ParallelStrategy::None)
            .finish()
            .map_err(|e| polars_error(self.describe(), e))
    }

    /// Whether rows of this row group may satisfy `predicate`, judged from the footer's
    /// min/max: `false` only when the statistics prove that none can. Understands
    /// comparisons of a column with a literal, joined by `&` and `|`; anything else may
    /// match.
    pub(crate) fn may_match(&self, predicate: &Expr) -> bool {
        use std::cmp::Ordering::*;
        let Expr::BinaryExpr { left, op, right } = predicate else {
            return true;
        };
        match op {
            Operator::And | Operator::LogicalAnd => {
                return self.may_match(left) && self.may_match(right)
            }
            Operator::Or | Operator::LogicalOr => {
                return self.may_match(left) || self.may_match(right)
            }
            _ => {}
        }
        // Put the column on the left: `5 < x` is `x > 5`.
        let (column, literal, op) = match (&**left, &**right) {
            (Expr::Column(c), lit @ Expr::Literal(_)) => (c, lit, *op),
            (lit @ Expr::Literal(_), Expr::Column(c)) => match op.swap_operands() {
                Some(op) => (c, lit, op),
                None => return true,
            },
            _ => return true,
        };
        let Some((min, max)) = self.stats.get(column.as_str()) else {
            return true;
        };
        let Some(v) = literal_bound(literal, min) else {
            return true;
        };
        let (Some(vs_min), Some(vs_max)) = (cmp(&v, min), cmp(&v, max)) else {
            return true;
        };
        match op {
            Operator::Eq => vs_min != Less && vs_max != Greater,
            Operator::Gt => vs_max == Less,
            Operator::GtEq => vs_max != Greater,
            Operator::Lt => vs_min == Greater,
            Operator::LtEq => vs_min != Less,
            _ => true,
        }
    }
}
