//! `store` to files and reading `.npy` back.
//!
//! Writing (`to_npy`, `to_raw`): one task makes the file at its full length (a `.npy` header
//! first, or nothing for raw), then every block's task writes its rows at their offsets
//! (blocks in parallel, none waits for another), and a last task answers the path. Reading
//! (`from_npy`): the header is read when the array is built; each block's task maps the file
//! (memmap2) and copies its rows out. All of them are registered tasks: on a broker the file
//! is written or read by the workers, so its path must be one they see (the same host or a
//! shared disk); a relative path is made absolute by the caller.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::grid::{for_each_row, ravel, Grid};
use super::{Array, Src};
use crate::{data_error, io_error, Error};

/// What a stored file holds before the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FileKind {
    /// A NumPy `.npy` file (version 1.0, `<f8`, C order).
    Npy,
    /// The values only: row-major little-endian `f64`.
    Raw,
}

/// NPY 1.0 header for a C-order little-endian `f64` array, padded to a multiple of 64 bytes.
fn header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {tuple}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Makes `path` at its full length (header, then room for every value) and answers where
/// the values start.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.create_file")]
pub(crate) fn create_file(
    path: PathBuf,
    shape: Vec<usize>,
    kind: FileKind,
) -> Result<u64, TaskError> {
    let head = match kind {
        FileKind::Npy => header(&shape),
        FileKind::Raw => Vec::new(),
    };
    let total = head.len() as u64 + 8 * shape.iter().product::<usize>() as u64;
    let mut f = File::create(&path).map_err(|e| io_error(path.display(), e))?;
    f.write_all(&head)
        .map_err(|e| io_error(path.display(), e))?;
    f.set_len(total).map_err(|e| io_error(path.display(), e))?;
    Ok(head.len() as u64)
}

/// Writes `block` (at global `start` of an array of shape `shape`) into `path`, whose values
/// start at `data_start`; answers the bytes written.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.write_block")]
pub(crate) fn write_block(
    path: PathBuf,
    data_start: u64,
    shape: Vec<usize>,
    start: Vec<usize>,
    block: Block,
) -> Result<u64, TaskError> {
    let data = block.values();
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error(path.display(), e))?;
    let len = block.shape().last().copied().unwrap_or(0);
    let mut row = 0;
    let mut result = Ok(());
    let mut bytes = Vec::with_capacity(len * 8);
    for_each_row(&start, block.shape(), |at, _| {
        if result.is_err() {
            return;
        }
        bytes.clear();
        for x in &data[row * len..(row + 1) * len] {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let off = data_start + 8 * ravel(at, &shape) as u64;
        result = f.write_all_at(&bytes, off);
        row += 1;
    });
    result.map_err(|e| io_error(path.display(), e))?;
    Ok(8 * data.len() as u64)
}

/// The path, once every block is written.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.files_done")]
pub(crate) fn files_done(path: PathBuf, written: Vec<u64>) -> PathBuf {
    let _ = written;
    path
}

/// The block at global `start` of shape `bshape` of the `.npy` (or raw) file `path` of an
/// array of shape `shape` whose values start at `data_start`, copied from the mapped file.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.array.read_block", codec = "msgpack")]
pub(crate) fn read_block(
    path: PathBuf,
    data_start: u64,
    shape: Vec<usize>,
    start: Vec<usize>,
    bshape: Vec<usize>,
) -> Result<Block, TaskError> {
    let f = File::open(&path).map_err(|e| io_error(path.display(), e))?;
    // SAFETY: the map is read-only and dropped before this task returns; a file changed
    // meanwhile by another process gives wrong values, not unsafety in this process's own
    // memory beyond what a concurrent write to any mapped file does (it is documented
    // that the file must not change while the array is read).
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_error(path.display(), e))?;
    let need = data_start + 8 * shape.iter().product::<usize>() as u64;
    if (map.len() as u64) < need {
        return Err(data_error(format!(
            "{}: {} bytes, but an array of shape {shape:?} needs {need}",
            path.display(),
            map.len()
        )));
    }
    let n: usize = bshape.iter().product();
    let mut values = Vec::with_capacity(n);
    for_each_row(&start, &bshape, |at, len| {
        let off = data_start as usize + 8 * ravel(at, &shape);
        let row = &map[off..off + 8 * len];
        values.extend(
            row.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
        );
    });
    ArrayD::from_shape_vec(IxDyn(&bshape), values)
        .map(Block::new)
        .map_err(|e| data_error(format!("{}: block {bshape:?}: {e}", path.display())))
}

/// Keeps the file tasks' bodies (and their registrations) linked.
pub(crate) fn keep_linked() {
    std::hint::black_box([
        create_file::__invoke as *const () as usize,
        write_block::__invoke as *const () as usize,
        files_done::__invoke as *const () as usize,
        read_block::__invoke as *const () as usize,
    ]);
}

/// `path` made absolute against the caller's directory (the workers may run elsewhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The shape and where the values start of a `.npy` file of `<f8` values in C order; an
/// error names the file and what is not supported.
fn read_header(path: &Path) -> Result<(Vec<usize>, u64), Error> {
    let bad = |what: String| Error::Input(format!("{}: {what}", path.display()));
    let mut f = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre)
        .map_err(|_| bad("too short for a .npy file".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (hlen, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            f.read_exact(&mut more)
                .map_err(|_| bad("a .npy header cut short".into()))?;
            (
                u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!(".npy format version {v} is not known"))),
    };
    let mut dict = vec![0u8; hlen];
    f.read_exact(&mut dict)
        .map_err(|_| bad("a .npy header cut short".into()))?;
    let dict = String::from_utf8_lossy(&dict);
    let field = |key: &str| -> Result<String, Error> {
        let at = dict
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!("the .npy header has no '{key}'")))?;
        let rest = dict[at + key.len() + 2..].trim_start();
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| bad(format!("the .npy header's '{key}' has no value")))?
            .trim_start();
        let end = if rest.starts_with('(') {
            rest.find(')').map(|i| i + 1)
        } else {
            rest.find([',', '}'])
        }
        .ok_or_else(|| bad(format!("the .npy header's '{key}' is not closed")))?;
        Ok(rest[..end].trim().to_owned())
    };
    let descr = field("descr")?;
    if descr.trim_matches(['\'', '"']) != "<f8" {
        return Err(bad(format!(
            "values of type {descr}: only little-endian float64 ('<f8') is read"
        )));
    }
    if field("fortran_order")? != "False" {
        return Err(bad("Fortran-order values: only C order is read".into()));
    }
    let shape = field("shape")?;
    let dims: Result<Vec<usize>, _> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let dims = dims.map_err(|e| bad(format!("the .npy shape {shape}: {e}")))?;
    Ok((dims, (start + hlen) as u64))
}

impl<'g> Array<'g> {
    /// Writes the array to `path` as a `.npy` file (NumPy's `np.load` reads it) and returns the
    /// path. One task per block writes that block's rows in place.
    pub fn to_npy(&self, path: impl AsRef<Path>) -> Delayed<PathBuf> {
        self.store(path.as_ref(), FileKind::Npy)
    }

    /// Writes the values to `path` as raw row-major little-endian `f64` (NumPy's
    /// `x.tofile(path)`; `np.fromfile(path).reshape(shape)` reads it) and returns the path.
    /// One task per block writes that block's rows in place.
    pub fn to_raw(&self, path: impl AsRef<Path>) -> Delayed<PathBuf> {
        self.store(path.as_ref(), FileKind::Raw)
    }

    fn store(&self, path: &Path, kind: FileKind) -> Delayed<PathBuf> {
        let path = absolute(path);
        let shape = self.grid.shape.clone();
        let created = create_file::delayed(self.g, path.clone(), shape.clone(), kind);
        let writes: Vec<Delayed<u64>> = (0..self.grid.nblocks())
            .map(|b| {
                let (start, _) = self.grid.block(b);
                write_block::delayed(
                    self.g,
                    path.clone(),
                    created,
                    shape.clone(),
                    start,
                    self.block_node(b),
                )
            })
            .collect();
        files_done::delayed(self.g, path, writes)
    }

    /// An array of the raw file at `path` (row-major little-endian `f64`, as
    /// [`to_raw`](Array::to_raw) and NumPy's `tofile` write it) of shape `shape`, in blocks of
    /// `chunks`; like [`from_npy`](Array::from_npy), each block's task maps the file.
    pub fn from_raw(
        g: &'g Graph,
        path: impl AsRef<Path>,
        shape: &[usize],
        chunks: &[usize],
    ) -> Result<Self, Error> {
        Self::from_file(g, &absolute(path.as_ref()), shape.to_vec(), 0, chunks)
    }

    /// An array of the `.npy` file at `path` (`<f8` values in C order, as `np.save` writes
    /// them) in blocks of `chunks`: the header is read now; each block's task maps the file
    /// and copies its block out when it runs, so the file must not change until then.
    pub fn from_npy(g: &'g Graph, path: impl AsRef<Path>, chunks: &[usize]) -> Result<Self, Error> {
        let path = absolute(path.as_ref());
        let (shape, data_start) = read_header(&path)?;
        if shape.is_empty() {
            return Err(Error::Input(format!(
                "{}: a 0-d array (an array needs at least one axis)",
                path.display()
            )));
        }
        Self::from_file(g, &path, shape, data_start, chunks)
    }

    /// The blocks of a file of `shape` whose values start at `data_start`, checked against
    /// the file's length.
    fn from_file(
        g: &'g Graph,
        path: &Path,
        shape: Vec<usize>,
        data_start: u64,
        chunks: &[usize],
    ) -> Result<Self, Error> {
        let need = data_start + 8 * shape.iter().product::<usize>() as u64;
        let len = std::fs::metadata(path)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
            .len();
        if len < need {
            return Err(Error::Input(format!(
                "{}: {len} bytes, but an array of shape {shape:?} needs {need}",
                path.display()
            )));
        }
        let grid = Grid::regular(&shape, chunks)?;
        let blocks = (0..grid.nblocks())
            .map(|b| {
                let (start, bshape) = grid.block(b);
                read_block::delayed(
                    g,
                    path.to_path_buf(),
                    data_start,
                    shape.clone(),
                    start,
                    bshape,
                )
            })
            .collect();
        Ok(Array {
            g,
            grid,
            src: Src::Blocks(blocks),
        })
    }
}
