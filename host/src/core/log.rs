//! Messages to the user through Nix: `@nix {json}` lines on stderr that Nix parses and shows
//! (hook mode), or plain lines when a person runs the binary.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

/// Nix's verbosity levels, as numbered on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Notice = 2,
    Info = 3,
    Talkative = 4,
    Chatty = 5,
    Debug = 6,
}

/// Nix's activity types that the hook uses.
#[derive(Clone, Copy, Debug)]
pub enum Activity {
    Unknown = 0,
    CopyPath = 100,
    CopyPaths = 103,
    Build = 105,
}

pub struct Logger {
    json: bool,
    verbosity: Level,
    next_id: AtomicU64,
}

impl Logger {
    /// `json` in hook mode, where Nix reads our stderr; `verbosity` is the parent's, which
    /// Nix passes as our last argument (Nix filters too; we avoid sending what it drops).
    pub fn new(json: bool, verbosity: Level) -> Self {
        // Activity ids only need to be unique within this hook process.
        Logger { json, verbosity, next_id: AtomicU64::new(u64::from(std::process::id()) << 32) }
    }

    pub fn msg(&self, level: Level, text: &str) {
        if level > self.verbosity {
            return;
        }
        if self.json {
            emit(&json!({"action": "msg", "level": level as u8, "msg": text}));
        } else {
            let prefix = match level {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            let _ = writeln!(std::io::stderr().lock(), "{prefix}{text}");
        }
    }

    pub fn error(&self, text: &str) {
        self.msg(Level::Error, text)
    }

    /// What ends the hook in failure, in the shape Nix's own hook gives the error that ends
    /// it (`error: …`, the lines after the first indented under the text); a person running
    /// the binary sees `error: …` as from [`Logger::error`].
    pub fn failure(&self, text: &str) {
        if self.json {
            self.msg(Level::Error, &nix_error(text))
        } else {
            self.error(text)
        }
    }

    /// A warning in the shape of Nix's `warn()` (`warning: …`), for what Nix's own hook warns
    /// of in its own words.
    pub fn nix_warning(&self, text: &str) {
        if self.json {
            self.msg(Level::Warn, &format!("{WARNING_PREFIX}{text}"))
        } else {
            self.warn(text)
        }
    }

    pub fn warn(&self, text: &str) {
        self.msg(Level::Warn, text)
    }

    /// Starts an activity that `nix build` shows while it runs; ends when the guard drops.
    pub fn start(&self, level: Level, kind: Activity, text: &str) -> ActivityGuard<'_> {
        self.start_with(level, kind, text, &[])
    }

    /// Like `start`, with Nix's fields for that activity type (a copyPath activity's path,
    /// source and destination), which `nix build` uses in its progress display.
    pub fn start_with(
        &self,
        level: Level,
        kind: Activity,
        text: &str,
        fields: &[serde_json::Value],
    ) -> ActivityGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if self.json {
            emit(&json!({
                "action": "start", "id": id, "level": level as u8, "type": kind as u64,
                "text": text, "parent": 0, "fields": fields
            }));
        } else if level <= self.verbosity {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        ActivityGuard { logger: self, id }
    }

    /// Passes on a `@nix` message of another Nix (a builder's daemon: its activities and their
    /// results) as it came, so that `nix build` shows them as Nix's own hook's; only in hook
    /// mode, where Nix reads them.
    pub fn relay(&self, message: serde_json::Value) {
        if self.json {
            emit(&message);
        }
    }
}

pub struct ActivityGuard<'a> {
    logger: &'a Logger,
    id: u64,
}

impl ActivityGuard<'_> {
    /// Reports progress (Nix's result type 105: done, expected, running, failed).
    pub fn progress(&self, done: u64, expected: u64) {
        if self.logger.json {
            emit(&json!({"action": "result", "id": self.id, "type": 105, "fields": [done, expected, 0, 0]}));
        }
    }
}

impl Drop for ActivityGuard<'_> {
    fn drop(&mut self) {
        if self.logger.json {
            emit(&json!({"action": "stop", "id": self.id}));
        }
    }
}

/// Nix's prefixes, colours included (Nix strips the escapes where its output is no terminal):
/// `warn()` writes `ANSI_WARNING "warning:" ANSI_NORMAL " "`, an error that ends a program
/// `ANSI_RED "error:" ANSI_NORMAL " "` (`showErrorInfo`, the same in 2.8 and 2.34).
const WARNING_PREFIX: &str = "\x1b[35;1mwarning:\x1b[0m ";
const ERROR_PREFIX: &str = "\x1b[31;1merror:\x1b[0m ";

/// `text` as Nix shows an error: the prefix, then the text without trailing whitespace, each
/// further non-empty line indented by the prefix's visible width.
pub fn nix_error(text: &str) -> String {
    let rest = " ".repeat("error: ".len());
    let mut out = String::new();
    for (i, line) in text.trim_end().split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !line.is_empty() {
            out.push_str(if i == 0 { ERROR_PREFIX } else { &rest });
        }
        out.push_str(line);
    }
    out
}

/// One write per line, so that lines from concurrent writers never interleave inside Nix's
/// line reader.
fn emit(v: &serde_json::Value) {
    let line = format!("@nix {v}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn level_from_verbosity(v: u64) -> Level {
    match v {
        0 => Level::Error,
        1 => Level::Warn,
        2 => Level::Notice,
        3 => Level::Info,
        4 => Level::Talkative,
        5 => Level::Chatty,
        _ => Level::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_shaped_as_nix_shows_one() {
        assert_eq!(nix_error("build failed"), "\x1b[31;1merror:\x1b[0m build failed");
        assert_eq!(
            nix_error("build of 'd' on 'u' failed: builder for 'd' failed with exit code 3;\nlast 1 log lines:\n> boom\n\n"),
            "\x1b[31;1merror:\x1b[0m build of 'd' on 'u' failed: builder for 'd' failed with exit code 3;\n       last 1 log lines:\n       > boom"
        );
        assert_eq!(nix_error("a\n\nb"), "\x1b[31;1merror:\x1b[0m a\n\n       b", "an empty line stays empty");
    }
}
