//! What several fuzz targets share: the split of an input into a script of operations and the
//! peer's byte stream, and a small valid NAR for the operations that send one.

use nwh_nar::{copy_nar, NarSummary};
use nwh_wire::Writer;

/// The most operations one input runs: enough for a whole captured session (eight requests).
pub const MAX_OPS: usize = 16;

/// Splits a protocol client's input: the bytes before the first `\n` name the operations to
/// perform in order (one letter each, see the target), the rest is what the peer answers.
/// Without a `\n` the whole input is the peer's stream and no operation follows the
/// handshake. Seeds are built as `<letters>\n<captured server stream>` (docs/fuzzing.md).
pub fn split_script(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i.min(MAX_OPS)], &data[i + 1..]),
        None => (&[], data),
    }
}

/// A NAR of one regular file holding `hello\n`, and its size and hash, for uploads.
pub fn tiny_nar() -> (Vec<u8>, NarSummary) {
    let mut nar = Vec::new();
    let mut w = Writer::new(&mut nar);
    for token in ["nix-archive-1", "(", "type", "regular", "contents", "hello\n", ")"] {
        w.write_str(token).expect("writing to a Vec");
    }
    let summary = copy_nar(&mut &nar[..], &mut std::io::sink()).expect("a valid NAR");
    (nar, summary)
}
