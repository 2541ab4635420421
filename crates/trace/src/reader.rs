//! Reading a trace back, record by record, within bounds: `replay` reads files of any size.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{parse_line, Record, TraceError};

/// The longest line read as a record: a record of ten thousand machines (the most a machines
/// file gives) is under 2 MiB. A longer line stops the reader with an error, before it is
/// held whole in memory.
pub const MAX_LINE: u64 = 64 << 20;

/// Reads a trace, one record per non-empty line.
pub struct Reader {
    path: PathBuf,
    input: BufReader<Box<dyn Read>>,
    line: usize,
    failed: bool,
}

impl Reader {
    /// `-` reads standard input.
    pub fn open(path: &Path) -> Result<Reader, TraceError> {
        let input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            let file =
                File::open(path).map_err(|error| TraceError::Open { path: path.to_path_buf(), error })?;
            Box::new(file)
        };
        Ok(Reader::new(path, input))
    }

    /// Reads `input`, naming it `path` in errors.
    pub fn new(path: &Path, input: Box<dyn Read>) -> Reader {
        Reader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 16, input),
            line: 0,
            failed: false,
        }
    }

    /// The next line, without its end, at most [`MAX_LINE`] long.
    fn next_line(&mut self) -> Option<Result<String, TraceError>> {
        let mut bytes = Vec::new();
        let read = (&mut self.input).take(MAX_LINE + 1).read_until(b'\n', &mut bytes);
        self.line += 1;
        let at = || format!("{}:{}", self.path.display(), self.line);
        match read {
            Ok(0) => None,
            Err(error) => Some(Err(TraceError::Read { at: at(), error })),
            Ok(_) if bytes.len() as u64 > MAX_LINE => {
                Some(Err(TraceError::TooLong { at: at(), limit: nwh_files::size(MAX_LINE) }))
            }
            Ok(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                Some(String::from_utf8(bytes).map_err(|error| TraceError::NotUtf8 { at: at(), error }))
            }
        }
    }
}

impl Iterator for Reader {
    /// The line number (1-based) and the record on it.
    type Item = Result<(usize, Record), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let text = match self.next_line()? {
                Ok(t) => t,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(parse_line(&text).map(|r| (self.line, r)).map_err(|e| TraceError::NotARecord {
                at: format!("{}:{}", self.path.display(), self.line),
                // serde's words may quote the offending value, which may be megabytes long.
                why: shorten(&e.to_string()),
            }));
        }
    }
}

/// At most a few hundred characters of `text`, for an error that quotes input.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
        None => text.to_string(),
    }
}
