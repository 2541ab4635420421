//! Decision traces: one JSON line per decision the hook makes (`trace = PATH`), and the reader
//! that `replay` uses. A line holds exactly what the policy saw and answered, so another
//! policy can be run on the same input later and the answers compared.

mod error;
mod file;
mod reader;
mod record;
mod time;

pub use error::TraceError;
pub use file::{append, rotated};
pub use reader::{Reader, MAX_LINE};
pub use record::{parse_line, Outcome, PolicyId, Record, VERSION};
pub use time::rfc3339;
