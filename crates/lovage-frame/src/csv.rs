//! `read_csv`: byte-range partitions cut at line ends, or one partition per file.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::Graph;
use polars::prelude::*;

use crate::frame::{Frame, Source};
use crate::{data_error, Error};

/// How `read_csv` cuts and parses files.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    /// Bytes per partition: a file is cut at the first line end after every `blocksize`
    /// bytes (default 64 MiB).
    pub blocksize: usize,
    /// One partition per file, never cut: needed when quoted fields hold newlines, since a
    /// cut at a line end cannot tell such a newline from a row's end.
    pub whole_file: bool,
    /// The field separator (default `,`).
    pub separator: u8,
    /// Rows read from the first file to infer the column types (default 1000).
    pub infer_rows: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            blocksize: 64 << 20,
            whole_file: false,
            separator: b',',
            infer_rows: 1000,
        }
    }
}

/// One partition of a CSV file: the lines that start in `start..end`.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CsvRange {
    path: PathBuf,
    start: u64,
    end: u64,
    #[serde(with = "crate::data::schema_ref")]
    schema: SchemaRef,
    separator: u8,
}

fn io_input(path: &Path, e: std::io::Error) -> Error {
    Error::Input(format!("{}: {e}", path.display()))
}

/// The files `pattern` matches, sorted, made absolute against this process's directory (a
/// worker that reads them may run elsewhere); an error when none does.
pub(crate) fn glob_files(pattern: &str) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| Error::Input(format!("bad glob {pattern:?}: {e}")))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!("no file matches {pattern:?}")));
    }
    Ok(files)
}

/// Splits a CSV line into fields, honouring double quotes.
fn split_fields(line: &[u8], sep: u8) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if quoted {
            if b == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    cur.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                cur.push(b);
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == sep {
            fields.push(String::from_utf8_lossy(&cur).into_owned());
            cur.clear();
        } else if b != b'\r' {
            cur.push(b);
        }
        i += 1;
    }
    fields.push(String::from_utf8_lossy(&cur).into_owned());
    fields
}

/// The first `n` lines of `path`, newlines included.
fn head_lines(path: &Path, n: usize) -> Result<Vec<u8>, Error> {
    let mut f = File::open(path).map_err(|e| io_input(path, e))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut lines = 0;
    loop {
        let got = f.read(&mut chunk).map_err(|e| io_input(path, e))?;
        if got == 0 {
            return Ok(buf);
        }
        for (i, &b) in chunk[..got].iter().enumerate() {
            if b == b'\n' {
                lines += 1;
                if lines == n {
                    buf.extend_from_slice(&chunk[..=i]);
                    return Ok(buf);
                }
            }
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// The first line of `path` (its header).
fn first_line(path: &Path) -> Result<Vec<u8>, Error> {
    let mut f = File::open(path).map_err(|e| io_input(path, e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = f.read(&mut chunk).map_err(|e| io_input(path, e))?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memchr::memchr(b'\n', &buf) {
            buf.truncate(i);
            return Ok(buf);
        }
    }
}

/// A frame reading the CSV files `pattern` matches. The schema is inferred once, from the
/// first file; every other file's header must name the same columns, and every partition
/// is parsed with that schema (a row that does not fit is an error naming file and line).
pub fn read_csv<'g>(g: &'g Graph, pattern: &str, options: CsvOptions) -> Result<Frame<'g>, Error> {
    let files = glob_files(pattern)?;
    // Only the header and the first `infer_rows` lines are parsed for the types, so a bad
    // row further on is reported by its partition (with its line), not here. The types come
    // from the first file with a row (a file of only a header would make every column text).
    let mut first = &files[0];
    let mut head = head_lines(first, options.infer_rows + 1)?;
    for path in &files {
        let lines = head_lines(path, 2)?;
        if lines.iter().filter(|b| **b == b'\n').count() >= 2
            || lines
                .split(|b| *b == b'\n')
                .nth(1)
                .is_some_and(|l| !l.is_empty())
        {
            first = path;
            head = head_lines(path, options.infer_rows + 1)?;
            break;
        }
    }
    let inferred = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(options.infer_rows))
        .map_parse_options(|p| p.with_separator(options.separator))
        .into_reader_with_file_handle(Cursor::new(&head[..]))
        .finish()
        .map_err(|e| Error::Input(format!("{}: cannot infer the schema: {e}", first.display())))?;
    let schema = inferred.schema().clone();
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let mut sources = Vec::new();
    for path in &files {
        let header = split_fields(&first_line(path)?, options.separator);
        if header != names {
            return Err(Error::Input(format!(
                "{}: header {header:?} differs from {}'s {names:?}",
                path.display(),
                first.display()
            )));
        }
        let size = std::fs::metadata(path)
            .map_err(|e| io_input(path, e))?
            .len();
        let block = options.blocksize.max(1) as u64;
        let cuts: Vec<u64> = if options.whole_file || size <= block {
            vec![0, size]
        } else {
            (0..size.div_ceil(block))
                .map(|i| i * block)
                .chain([size])
                .collect()
        };
        for w in cuts.windows(2) {
            sources.push(Source::Csv(Arc::new(CsvRange {
                path: path.clone(),
                start: w[0],
                end: w[1],
                schema: schema.clone(),
                separator: options.separator,
            })));
        }
    }
    Ok(Frame::new(g, sources, schema))
}

impl CsvRange {
    pub(crate) fn describe(&self) -> String {
        format!("{} bytes {}..{}", self.path.display(), self.start, self.end)
    }

    fn io(&self, e: std::io::Error) -> TaskError {
        TaskError::new("IoError", format!("{}: {e}", self.path.display()))
    }

    /// The bytes of the lines starting in `start..end` (a line that starts before `end`
    /// is read to its end; the partition before owns a line cut by `start`).
    fn bytes(&self) -> Result<Vec<u8>, TaskError> {
        let mut f = File::open(&self.path).map_err(|e| self.io(e))?;
        let size = f.metadata().map_err(|e| self.io(e))?.len();
        // Begin at the first line start at or after `start`: one past a newline at or after start - 1.
        let begin = if self.start == 0 {
            0
        } else {
            match find_newline(&mut f, self.start - 1, size).map_err(|e| self.io(e))? {
                Some(nl) => nl + 1,
                None => size,
            }
        };
        let stop = if self.end >= size {
            size
        } else {
            match find_newline(&mut f, self.end - 1, size).map_err(|e| self.io(e))? {
                Some(nl) => nl + 1,
                None => size,
            }
        };
        if stop <= begin {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (stop - begin) as usize];
        f.seek(SeekFrom::Start(begin)).map_err(|e| self.io(e))?;
        f.read_exact(&mut buf).map_err(|e| self.io(e))?;
        Ok(buf)
    }

    /// Parses the range with the frame's schema.
    pub(crate) fn read(&self) -> Result<DataFrame, TaskError> {
        let bytes = self.bytes()?;
        let header = self.start == 0;
        if bytes.is_empty() {
            return Ok(DataFrame::empty_with_schema(&self.schema));
        }
        let parsed = CsvReadOptions::default()
            .with_has_header(header)
            .with_schema(Some(self.schema.clone()))
            .with_n_threads(Some(1))
            .map_parse_options(|p| p.with_separator(self.separator))
            .into_reader_with_file_handle(Cursor::new(&bytes[..]))
            .finish();
        match parsed {
            Ok(df) => Ok(df),
            Err(e) => Err(self.locate_bad_row(&bytes, header, e)),
        }
    }

    /// The error for a range Polars could not parse: finds the first row that does not fit
    /// the schema and names its file and line.
    fn locate_bad_row(&self, bytes: &[u8], header: bool, e: PolarsError) -> TaskError {
        let base_line = match self.lines_before() {
            Ok(n) => n,
            Err(io) => return io,
        };
        let width = self.schema.len();
        let mut line_no = base_line;
        let mut rest = bytes;
        let mut first = header;
        while !rest.is_empty() {
            // A record ends at a newline outside quotes.
            let (mut quoted, mut end) = (false, rest.len());
            for (i, &b) in rest.iter().enumerate() {
                if b == b'"' {
                    quoted = !quoted;
                } else if b == b'\n' && !quoted {
                    end = i;
                    break;
                }
            }
            let record = &rest[..end];
            line_no += 1;
            let newlines_inside = memchr::memchr_iter(b'\n', record).count();
            rest = rest.get(end + 1..).unwrap_or(&[]);
            if std::mem::take(&mut first) || record.is_empty() {
                line_no += newlines_inside;
                continue;
            }
            let fields = split_fields(record, self.separator);
            let problem = if fields.len() != width {
                Some(format!(
                    "{} fields where the header has {width}",
                    fields.len()
                ))
            } else {
                fields
                    .iter()
                    .zip(self.schema.iter())
                    .find_map(|(v, (name, dtype))| {
                        (!fits(v, dtype))
                            .then(|| format!("column {name:?} ({dtype}) cannot hold {v:?}"))
                    })
            };
            if let Some(problem) = problem {
                return data_error(format!(
                    "{}:{line_no}: bad row: {problem} (if quoted fields hold newlines, read with whole_file)",
                    self.path.display()
                ));
            }
            line_no += newlines_inside;
        }
        data_error(format!("{}: {e}", self.describe()))
    }

    /// The number of lines before the range's first line.
    fn lines_before(&self) -> Result<usize, TaskError> {
        if self.start == 0 {
            return Ok(0);
        }
        let mut f = File::open(&self.path).map_err(|e| self.io(e))?;
        let size = f.metadata().map_err(|e| self.io(e))?.len();
        let begin = match find_newline(&mut f, self.start - 1, size).map_err(|e| self.io(e))? {
            Some(nl) => nl + 1,
            None => size,
        };
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        let mut buf = vec![0u8; begin as usize];
        f.read_exact(&mut buf).map_err(|e| self.io(e))?;
        Ok(memchr::memchr_iter(b'\n', &buf).count())
    }
}

/// Whether the text `v` parses as `dtype` (empty means null, which every column holds).
fn fits(v: &str, dtype: &DataType) -> bool {
    if v.is_empty() {
        return true;
    }
    match dtype {
        DataType::Int64 | DataType::Int32 => v.trim().parse::<i64>().is_ok(),
        DataType::UInt64 | DataType::UInt32 => v.trim().parse::<u64>().is_ok(),
        DataType::Float64 | DataType::Float32 => v.trim().parse::<f64>().is_ok(),
        DataType::Boolean => matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false"),
        _ => true,
    }
}

/// The position of the first newline at or after `from`, if any.
fn find_newline(f: &mut File, from: u64, size: u64) -> std::io::Result<Option<u64>> {
    f.seek(SeekFrom::Start(from))?;
    let mut pos = from;
    let mut chunk = vec![0u8; 64 << 10];
    while pos < size {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &chunk[..n]) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
    Ok(None)
}
