//! The NAR reader and the export-stream readers (crates/nar), on the same bytes:
//!
//! * `copy_nar`: no panic; when it accepts, the copy is exactly the bytes it consumed, its
//!   size and sha256 are theirs, and `dump`-style re-reading of the copy accepts it again.
//! * `copy_export` and `ExportReader` (a state machine written separately from `copy_export`
//!   for servers that lend their input out): no panic, and the two agree on whether the
//!   stream is valid, on the bytes passed on and on the paths found, even when the source
//!   hands out a few bytes per read.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use nwh_nar::{copy_export, copy_nar, ExportReader};

fuzz_target!(|data: &[u8]| {
    check_nar(data);
    check_export(data);
});

fn check_nar(data: &[u8]) {
    let mut copy = Vec::new();
    let Ok(summary) = copy_nar(&mut &data[..], &mut copy) else { return };
    let size = summary.size as usize;
    assert_eq!(copy, data[..size], "the copy is the bytes read");
    let mut again = Vec::new();
    let second = copy_nar(&mut &copy[..], &mut again).expect("an accepted NAR is accepted again");
    assert_eq!(second, summary);
    assert_eq!(again, copy);
}

fn check_export(data: &[u8]) {
    let mut copied = Vec::new();
    let whole = copy_export(&mut &data[..], &mut copied);

    // Reads of 1 to 7 bytes at a time walk the reader through every state split.
    let chunk = data.len() % 7 + 1;
    let mut reader = ExportReader::new(Trickle { data, chunk });
    let mut streamed = Vec::new();
    let piecewise = reader.read_to_end(&mut streamed);

    match (&whole, &piecewise) {
        (Ok(entries), Ok(_)) => {
            assert!(reader.is_done());
            assert_eq!(streamed, copied, "same bytes passed on");
            assert_eq!(reader.entries(), &entries[..], "same paths");
            assert_eq!(copied, data[..copied.len()]);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("copy_export says {whole:?}, ExportReader says {piecewise:?}"),
    }
}

/// A source that gives at most `chunk` bytes per read, like a pipe under load.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
