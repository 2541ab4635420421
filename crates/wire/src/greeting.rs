//! What every client of Nix's protocols needs at the start of a connection over a pipe: to
//! tell a peer that went away from one that answered something else (a login banner, a
//! shell's "command not found"), and to show the latter in an error.

use std::io::{self, Read};

/// The peer closed its end (or reset the connection): a missing program, a refused login.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// Reads into `buf` until it holds `limit` bytes or the peer stops sending.
pub fn read_up_to(r: &mut impl Read, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let mut chunk = [0u8; 512];
    while buf.len() < limit {
        let want = (limit - buf.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a peer sent instead of a greeting, as one line: control characters escaped, cut at a
/// sensible length.
pub fn printable_greeting(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 512 {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}
