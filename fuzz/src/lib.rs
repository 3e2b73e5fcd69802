//! Helpers shared by the fuzz targets.

use std::io::Read;

/// Reads `data` in pieces of `piece` bytes (at least one), as a pipe or a socket hands a frame
/// over in parts: a reader must cope with a frame split anywhere.
pub struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl<'a> Pieces<'a> {
    /// The first byte of `input` picks the piece size (1 to 256 bytes); the rest is the stream.
    pub fn from_input(input: &'a [u8]) -> Self {
        match input.split_first() {
            Some((&first, rest)) => Pieces {
                data: rest,
                piece: usize::from(first) + 1,
            },
            None => Pieces {
                data: input,
                piece: 1,
            },
        }
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
