//! Appending to a trace that several hook processes share, and rotating it when it is full.
//!
//! Nix starts one hook per build, so a record is written with a single `write(2)` on an
//! `O_APPEND` descriptor, which the kernel places whole at the end of the file, after any other
//! process's line.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Record, TraceError};

/// Appends one record as one line, rotating first when the file has reached `max_bytes`.
pub fn append(path: &Path, max_bytes: u64, rec: &Record) -> Result<(), TraceError> {
    let mut line = serde_json::to_vec(rec).map_err(TraceError::Encode)?;
    line.push(b'\n');
    let mut file = open_append(path)?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) >= max_bytes {
        rotate(path, &file);
        file = open_append(path)?;
    }
    // One write(2): with O_APPEND the kernel puts the line at the end in one piece, even
    // with other hooks appending at the same moment. Retrying a short write would not be
    // atomic any more, so a short write is reported instead.
    let written =
        file.write(&line).map_err(|error| TraceError::Append { path: path.to_path_buf(), error })?;
    if written != line.len() {
        return Err(TraceError::ShortWrite { path: path.to_path_buf(), written, len: line.len() });
    }
    Ok(())
}

/// Created 0600, never through a link, and an existing trace only when it is ours and closed
/// to others' writing: the hook runs as root, and a trace's directory may be shared.
fn open_append(path: &Path) -> Result<File, TraceError> {
    nwh_files::private::open_append(path)
        .map_err(|e| TraceError::OpenToAppend { path: path.to_path_buf(), error: e.into() })
}

/// Where the previous, full file goes; one is kept.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Moves the full file `file` (opened as `path`) to `path.1`. Two hooks may find it full at
/// once; if both renamed, the second would move the first one's fresh, nearly empty file
/// over `path.1` and lose the full one. So only the hook that holds the lock on the full
/// file, and sees that `path` still names it, renames. A hook that loses the race simply
/// appends to whatever `path` names now.
fn rotate(path: &Path, file: &File) {
    use rustix::fs::{flock, FlockOperation};
    if flock(file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return;
    }
    let same = match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        // A failure leaves the file growing past its bound, which is better than no trace.
        let _ = std::fs::rename(path, rotated(path));
    }
    let _ = flock(file, FlockOperation::Unlock);
}
