//! Text sources: `read_text` (lines of files, cut into byte ranges at newlines), `read_jsonl`,
//! and `to_textfiles`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use serde::{Deserialize, Serialize};

use super::tasks::{combine_tree, finish_node, Agg, Plan, Source};
use super::{Bag, Chunk, Item, Part, Sink};
use crate::combine::SPLIT_EVERY;
use crate::{data_error, io_error, Error};

/// How a file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One partition of a text source: the lines of `path` that begin in `start..end` (a whole
/// file for a compressed one). It is data: a worker on the same host reads the range itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TextRange {
    pub(crate) path: PathBuf,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) compression: Compression,
}

/// The bytes of a partition: every line that begins in its range, whole, and the file offset
/// of the first byte (for line numbers in errors).
pub(crate) struct RangeBytes {
    pub(crate) bytes: Vec<u8>,
    pub(crate) offset: u64,
}

impl TextRange {
    /// Reads the partition's lines. A line belongs to the range its first byte is in, so
    /// neighbouring ranges split every line to exactly one of them.
    pub(crate) fn read(&self) -> Result<RangeBytes, TaskError> {
        let what = || self.path.display().to_string();
        let mut f = File::open(&self.path).map_err(|e| io_error(what(), e))?;
        match self.compression {
            Compression::Gzip => {
                let mut bytes = Vec::new();
                flate2::read::MultiGzDecoder::new(f)
                    .read_to_end(&mut bytes)
                    .map_err(|e| io_error(format!("{} (gzip)", what()), e))?;
                crate::progress::count_read(bytes.len());
                return Ok(RangeBytes { bytes, offset: 0 });
            }
            Compression::Zstd => {
                let bytes = zstd::stream::decode_all(f)
                    .map_err(|e| io_error(format!("{} (zstd)", what()), e))?;
                crate::progress::count_read(bytes.len());
                return Ok(RangeBytes { bytes, offset: 0 });
            }
            Compression::None => {}
        }
        // Start one byte early: if that byte is a newline, a line begins at `start`.
        let from = self.start.saturating_sub(1);
        f.seek(SeekFrom::Start(from))
            .map_err(|e| io_error(what(), e))?;
        let mut bytes = Vec::with_capacity((self.end - from) as usize + 4096);
        (&mut f)
            .take(self.end - from)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(what(), e))?;
        let skip = if self.start == 0 {
            0
        } else {
            match memchr::memchr(b'\n', &bytes) {
                Some(i) => i + 1,
                None => bytes.len(),
            }
        };
        // Finish the last line that began inside the range.
        let ends_clean = bytes.len() <= skip || bytes.last() == Some(&b'\n');
        if !ends_clean && bytes.len() as u64 == self.end - from {
            let mut piece = [0u8; 8192];
            loop {
                let n = f.read(&mut piece).map_err(|e| io_error(what(), e))?;
                if n == 0 {
                    break;
                }
                match memchr::memchr(b'\n', &piece[..n]) {
                    Some(i) => {
                        bytes.extend_from_slice(&piece[..=i]);
                        break;
                    }
                    None => bytes.extend_from_slice(&piece[..n]),
                }
            }
        }
        crate::progress::count_read(bytes.len());
        bytes.drain(..skip);
        Ok(RangeBytes {
            bytes,
            offset: from + skip as u64,
        })
    }

    /// The 1-based line number of the line at byte `at` of this partition's bytes.
    pub(crate) fn line_number(&self, bytes: &RangeBytes, at: usize) -> u64 {
        let here = memchr::memchr_iter(b'\n', &bytes.bytes[..at]).count() as u64;
        let before = if bytes.offset == 0 {
            0
        } else {
            // Only on an error: count the newlines before the partition in the file.
            count_newlines(&self.path, bytes.offset).unwrap_or(0)
        };
        before + here + 1
    }
}

fn count_newlines(path: &Path, upto: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?.take(upto);
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64;
    }
}

/// Calls `f` with every line (without its `\n` or `\r\n`) and the line's byte position.
pub(crate) fn for_each_line(
    bytes: &[u8],
    mut f: impl FnMut(&[u8], usize) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let mut line = &bytes[start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        f(line, start)?;
        start = end + 1;
    }
    Ok(())
}

/// Calls `sink` with every line of the range as text; a line that is not UTF-8 fails, naming
/// the file and line.
pub(crate) fn text_lines(
    r: &TextRange,
    sink: &mut dyn FnMut(&str) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let bytes = r.read()?;
    for_each_line(&bytes.bytes, |line, at| {
        let s = std::str::from_utf8(line).map_err(|e| {
            data_error(format!(
                "{}:{}: not UTF-8 text: {e}",
                r.path.display(),
                r.line_number(&bytes, at)
            ))
        })?;
        sink(s)
    })
}

/// Calls `sink` with the JSON value of every non-blank line of the range; a malformed line
/// fails naming the file and line, or is left out, as `on_error` says.
pub(crate) fn json_lines(
    r: &TextRange,
    on_error: OnError,
    sink: &mut dyn FnMut(serde_json::Value) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let bytes = r.read()?;
    for_each_line(&bytes.bytes, |line, at| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice(line) {
            Ok(v) => sink(v),
            Err(_) if on_error == OnError::Skip => Ok(()),
            Err(e) => Err(data_error(format!(
                "{}:{}: invalid JSON: {e}",
                r.path.display(),
                r.line_number(&bytes, at)
            ))),
        }
    })
}

/// The files `pattern` matches, sorted, cut into ranges of about `blocksize` bytes.
fn ranges(pattern: &str, blocksize: Option<usize>) -> Result<Vec<TextRange>, Error> {
    let paths = glob::glob(pattern)
        .map_err(|e| Error::Input(format!("bad file pattern {pattern:?}: {e}")))?;
    let mut files = Vec::new();
    for p in paths {
        let p = p.map_err(|e| Error::Input(format!("{pattern:?}: {e}")))?;
        if p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(Error::Input(format!("no file matches {pattern:?}")));
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
            .len();
        let name = path.to_string_lossy();
        let compression = if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".zst") || name.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        };
        let block = match (compression, blocksize) {
            (Compression::None, Some(b)) => (b as u64).max(1),
            _ => len.max(1),
        };
        let mut start = 0;
        loop {
            let end = (start + block).min(len);
            out.push(TextRange {
                path: path.clone(),
                start,
                end,
                compression,
            });
            start = end;
            if start >= len {
                break;
            }
        }
    }
    Ok(out)
}

/// The lines of the files `pattern` (a glob) matches, in file-name order, each file cut into
/// partitions of about `blocksize` bytes at line boundaries (`None`: one partition per file).
/// Files ending in `.gz` or `.zst` are read whole, one partition each. Lines lose their `\n`
/// (and `\r\n`); text must be UTF-8 (an error names the file and line otherwise).
pub fn read_text<'g>(
    g: &'g Graph,
    pattern: &str,
    blocksize: Option<usize>,
) -> Result<Bag<'g, String>, Error> {
    let ranges = ranges(pattern, blocksize)?;
    let parts = ranges
        .iter()
        .map(|r| {
            let r = r.clone();
            Part {
                input: None,
                pipe: Arc::new(move |_: Option<&Chunk>, sink: Sink<'_, String>| {
                    text_lines(&r, &mut |s| sink(s.to_string()))
                }),
            }
        })
        .collect();
    let sources = ranges.iter().cloned().map(Source::Lines).collect();
    Ok(Bag {
        g,
        parts,
        data: Some(Plan::new(sources)),
        raw: None,
    })
}

/// What to do with a line that is not valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnError {
    /// Fail the partition's task with an error naming the file and line.
    Fail,
    /// Leave the line out.
    Skip,
}

/// One JSON value per non-blank line of the files `pattern` matches (partitioned as
/// [`read_text`]). A malformed line fails with `path:line: …` or is skipped, as `on_error` says.
pub fn read_jsonl<'g>(
    g: &'g Graph,
    pattern: &str,
    blocksize: Option<usize>,
    on_error: OnError,
) -> Result<Bag<'g, serde_json::Value>, Error> {
    let ranges = ranges(pattern, blocksize)?;
    let parts = ranges
        .iter()
        .map(|r| {
            let r = r.clone();
            Part {
                input: None,
                pipe: Arc::new(
                    move |_: Option<&Chunk>, sink: Sink<'_, serde_json::Value>| {
                        json_lines(&r, on_error, sink)
                    },
                ),
            }
        })
        .collect();
    let sources = ranges
        .into_iter()
        .map(|range| Source::Json { range, on_error })
        .collect();
    Ok(Bag {
        g,
        parts,
        data: Some(Plan::new(sources)),
        raw: None,
    })
}

/// The file of each of `n` partitions: `*` in `path` replaced by the partition's number
/// (zero-padded to at least 3 digits, so the files sort in order), or `path/<number>.part`
/// when `path` has no `*` (a directory). A relative path is made absolute here, so a worker
/// in another directory writes where the caller meant.
fn textfile_paths(path: &Path, n: usize) -> Result<Vec<PathBuf>, Error> {
    let path = std::path::absolute(path)
        .map_err(|e| Error::Input(format!("to_textfiles: {}: {e}", path.display())))?;
    let text = path.to_string_lossy().into_owned();
    let pattern = match text.matches('*').count() {
        0 => path.join("*.part").to_string_lossy().into_owned(),
        1 => text,
        _ => {
            return Err(Error::Input(format!(
                "to_textfiles: {text:?} has more than one '*'"
            )))
        }
    };
    let width = n.max(1).to_string().len().max(3);
    Ok((0..n)
        .map(|i| PathBuf::from(pattern.replace('*', &format!("{i:0width$}"))))
        .collect())
}

impl<'g, T: Item + std::fmt::Display> Bag<'g, T> {
    /// Dask's `to_textfiles(path)`: writes each partition to its own file, one item per line,
    /// and returns the paths. `path` is a pattern with one `*`, replaced by the partition's
    /// number (zero-padded to at least 3 digits: `out/*.txt` gives `out/000.txt`, …), or a
    /// directory (`dir/000.part`, …); missing directories are created. On a bag that is data
    /// each partition is written by the task (the worker) that computes it, so on every
    /// scheduler: strings as themselves, numbers as Rust prints them, other items as their
    /// JSON text. An error: a pattern with several `*`.
    pub fn to_textfiles(&self, path: impl AsRef<Path>) -> Result<Delayed<Vec<PathBuf>>, Error> {
        let paths = textfile_paths(path.as_ref(), self.parts.len())?;
        if let Some(plan) = &self.data {
            let partials = plan.partials(self.g, |i| Agg::Write(paths[i].clone()));
            let acc = combine_tree(self.g, partials, &Agg::Items, SPLIT_EVERY);
            return Ok(finish_node(self.g, Agg::Items, acc));
        }
        let files: Vec<Delayed<PathBuf>> = self
            .parts
            .iter()
            .zip(paths)
            .map(|(p, path)| {
                let part = p.clone();
                self.g.try_local_all(
                    "bag-to-textfile",
                    move |inputs: Vec<Chunk>| {
                        if let Some(dir) = path.parent() {
                            std::fs::create_dir_all(dir).map_err(|e| io_error(dir.display(), e))?;
                        }
                        let f = File::create(&path).map_err(|e| io_error(path.display(), e))?;
                        let mut w = std::io::BufWriter::new(f);
                        part.run(&inputs, &mut |x| {
                            writeln!(w, "{x}").map_err(|e| io_error(path.display(), e))
                        })?;
                        w.flush().map_err(|e| io_error(path.display(), e))?;
                        Ok(path.clone())
                    },
                    p.inputs(),
                )
            })
            .collect();
        Ok(self.g.collect(files))
    }
}
