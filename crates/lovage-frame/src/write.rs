//! Writers: `to_parquet(dir)` and `to_csv(dir)`, a file per partition (`part-00000.parquet`,
//! …), each written under a temporary name and renamed when complete, so a file that exists
//! under its final name is whole.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::Delayed;
use polars::prelude::*;

use crate::data::Packed;
use crate::frame::Frame;
use crate::{data_error, polars_error, Error};

/// Writes a partition to an open file in one format.
type WriteFn = dyn Fn(File, &mut DataFrame) -> PolarsResult<()> + Send + Sync;

/// The file formats the writers write.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum FileFormat {
    Parquet,
    /// With a header.
    Csv,
}

impl FileFormat {
    /// The file name's extension.
    fn ext(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
        }
    }

    /// Writes `df` to `f`.
    pub(crate) fn write(self, f: File, df: &mut DataFrame) -> PolarsResult<()> {
        match self {
            FileFormat::Parquet => ParquetWriter::new(f).finish(df).map(|_| ()),
            FileFormat::Csv => CsvWriter::new(f).include_header(true).finish(df),
        }
    }
}

/// Writes `df` to `path` through a temporary file in the same directory.
pub(crate) fn write_atomically(
    path: &Path,
    df: &mut DataFrame,
    write: &WriteFn,
) -> Result<PathBuf, TaskError> {
    let io = |e: std::io::Error| data_error(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io)?;
    write(file, df).map_err(|e| polars_error(path.display(), e))?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(path.to_path_buf())
}

impl<'g> Frame<'g> {
    /// One node per partition writing it to `dir/part-NNNNN.ext` with `write`, then one
    /// node listing the files in partition order.
    fn write_parts(&self, dir: &Path, format: FileFormat) -> Result<Delayed<Vec<PathBuf>>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
        // An absolute directory: a worker elsewhere writes where the caller meant.
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
        let ext = format.ext();
        if let Some(parts) = self.data_parts() {
            let paths: Vec<Delayed<PathBuf>> = parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let path = dir.join(format!("part-{i:05}.{ext}"));
                    crate::row_tasks::write::delayed(self.g, Packed(p.data), p.input, path, format)
                })
                .collect();
            return Ok(self.g.collect(paths));
        }
        let write: Arc<WriteFn> = Arc::new(move |f, df| format.write(f, df));
        let paths: Vec<Delayed<PathBuf>> = self
            .partitions()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let path = dir.join(format!("part-{i:05}.{ext}"));
                let write = write.clone();
                self.g.try_local_all(
                    "write",
                    move |v: Vec<DataFrame>| {
                        let mut df = v.into_iter().next().unwrap_or_default();
                        write_atomically(&path, &mut df, &*write)
                    },
                    vec![p],
                )
            })
            .collect();
        Ok(self.g.collect(paths))
    }

    /// Writes each partition to a Parquet file in `dir` (made if missing):
    /// `part-00000.parquet`, … in partition order (Dask's `to_parquet`). The result lists
    /// the files; `read_parquet(dir/*.parquet)` reads them back in the same order.
    pub fn to_parquet(&self, dir: impl AsRef<Path>) -> Result<Delayed<Vec<PathBuf>>, Error> {
        self.write_parts(dir.as_ref(), FileFormat::Parquet)
    }

    /// Writes each partition to a CSV file with a header in `dir` (made if missing):
    /// `part-00000.csv`, … (Dask's `to_csv`).
    pub fn to_csv(&self, dir: impl AsRef<Path>) -> Result<Delayed<Vec<PathBuf>>, Error> {
        self.write_parts(dir.as_ref(), FileFormat::Csv)
    }
}
