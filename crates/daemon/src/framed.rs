//! The framed stream in which a client sends NARs since 1.23 (`AddToStoreNar`,
//! `AddMultipleToStore`): chunks, each a u64 length and that many raw bytes (no padding),
//! ended by a zero length. Framing lets the daemon tell where the data ends without parsing
//! it, and skip the rest of it if it fails half-way.

use std::io::{self, Write};

/// Nix's buffer size, so that our chunks fall where Nix's do for data written in pieces
/// smaller than it.
pub const FRAME_SIZE: usize = 32 * 1024;

/// Writes everything it is given as frames onto `inner`. Call [`FramedWriter::finish`] to
/// send the rest and the terminating zero; dropping it without does neither.
pub struct FramedWriter<'a, W: Write> {
    inner: &'a mut W,
    buf: Vec<u8>,
}

impl<'a, W: Write> FramedWriter<'a, W> {
    pub fn new(inner: &'a mut W) -> Self {
        FramedWriter { inner, buf: Vec::with_capacity(FRAME_SIZE) }
    }

    fn frame(inner: &mut W, data: &[u8]) -> io::Result<()> {
        inner.write_all(&(data.len() as u64).to_le_bytes())?;
        inner.write_all(data)
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            Self::frame(self.inner, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is buffered and the end marker.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.inner.write_all(&0u64.to_le_bytes())
    }
}

/// Like Nix's buffered sink: data that would fill the buffer goes out as a frame of its own
/// right after what was buffered; smaller pieces are collected.
impl<W: Write> Write for FramedWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() + data.len() >= FRAME_SIZE {
            self.send_buffer()?;
            Self::frame(self.inner, data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    /// Frames are sent as they fill; flushing does not cut one short.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_writes_share_a_frame_and_big_ones_go_alone() {
        let mut out = Vec::new();
        let mut w = FramedWriter::new(&mut out);
        w.write_all(b"abc").unwrap();
        w.write_all(b"de").unwrap();
        w.write_all(&vec![7u8; FRAME_SIZE]).unwrap();
        w.finish().unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(&5u64.to_le_bytes());
        expect.extend_from_slice(b"abcde");
        expect.extend_from_slice(&(FRAME_SIZE as u64).to_le_bytes());
        expect.extend_from_slice(&vec![7u8; FRAME_SIZE]);
        expect.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(out, expect);
    }

    #[test]
    fn nothing_is_just_the_end_marker() {
        let mut out = Vec::new();
        FramedWriter::new(&mut out).finish().unwrap();
        assert_eq!(out, 0u64.to_le_bytes());
    }
}
