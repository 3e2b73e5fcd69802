//! `store` to a `.npy` file: the header first, then every block writes its rows at their
//! offsets (blocks in parallel, no block waits for another).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lovage_graph::Delayed;

use super::grid::{for_each_row, ravel};
use super::{Array, Block};
use crate::{internal, io_error};

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

impl<'g> Array<'g> {
    /// Writes the array to `path` as a `.npy` file (NumPy's `np.load` reads it) and returns the
    /// path. One task per block writes that block's rows in place.
    pub fn to_npy(&self, path: impl AsRef<Path>) -> Delayed<PathBuf> {
        let path = path.as_ref().to_path_buf();
        let shape = self.grid.shape.clone();
        let head = header(&shape);
        let total = head.len() as u64 + 8 * shape.iter().product::<usize>() as u64;
        let created = {
            let path = path.clone();
            self.g.try_local_all(
                "npy-create",
                move |_: Vec<bool>| {
                    let mut f = File::create(&path).map_err(|e| io_error(path.display(), e))?;
                    f.write_all(&head)
                        .map_err(|e| io_error(path.display(), e))?;
                    f.set_len(total).map_err(|e| io_error(path.display(), e))?;
                    Ok(true)
                },
                Vec::new(),
            )
        };
        let data_start = header(&shape).len() as u64;
        let writes: Vec<Delayed<bool>> = (0..self.grid.nblocks())
            .map(|b| {
                let (start, bshape) = self.grid.block(b);
                let (path, shape) = (path.clone(), shape.clone());
                let block = self.block_node(b);
                let ready = self.g.tuple((created, block));
                self.g.try_local_all(
                    "npy-write",
                    move |v: Vec<(bool, Block)>| {
                        let (_, a) = v.first().ok_or_else(|| internal("npy lost its block"))?;
                        let data = a
                            .as_slice()
                            .ok_or_else(|| internal("a block is not contiguous"))?;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| io_error(path.display(), e))?;
                        let len = bshape.last().copied().unwrap_or(0);
                        let mut row = 0;
                        let mut result = Ok(());
                        let mut bytes = Vec::with_capacity(len * 8);
                        for_each_row(&start, &bshape, |at, _| {
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
                        Ok(true)
                    },
                    vec![ready],
                )
            })
            .collect();
        self.g
            .try_local_all("npy-done", move |_: Vec<bool>| Ok(path.clone()), writes)
    }
}
