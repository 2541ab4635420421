//! The nix.conf syntax: `name = value` lines, comments, blanks and `include` / `!include`.

use std::io;
use std::path::Path;

use crate::error::{ConfError, Result, Warning, MAX_INCLUDE_DEPTH};
use crate::origin::Origin;
use crate::settings::Settings;

/// A parsed `name = value` line, before it is applied.
pub(crate) struct Assignment {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) origin: Origin,
}

/// Nix's tokenizer splits on exactly these.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

impl Settings {
    /// Reads a configuration file as text; `None` means skip it.
    pub(crate) fn read_conf(&mut self, path: &Path, included_from: Option<&Origin>) -> Option<String> {
        match nwh_files::read(path, nwh_files::NIX_CONF) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.warnings.push(Warning::Unreadable {
                    path: path.to_owned(),
                    included_from: included_from.cloned(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Parses `text` (from `file`, or `NIX_CONFIG` when `None`) into assignments, following
    /// includes.
    pub(crate) fn parse(
        &mut self,
        text: &str,
        file: Option<&Path>,
        depth: usize,
        out: &mut Vec<Assignment>,
    ) -> Result<()> {
        for (idx, raw) in text.split('\n').enumerate() {
            let origin = match file {
                Some(path) => Origin::File { path: path.to_owned(), line: idx + 1 },
                None => Origin::NixConfig { line: idx + 1 },
            };
            let line = raw.split_once('#').map_or(raw, |(before, _)| before);
            let tokens: Vec<&str> = line.split(is_blank).filter(|t| !t.is_empty()).collect();
            match tokens.as_slice() {
                [] => continue,
                [keyword @ ("include" | "!include"), rest @ ..] => {
                    let [target] = rest else {
                        return Err(ConfError::BadInclude { origin, keyword: keyword.to_string() });
                    };
                    let base = file.and_then(Path::parent).unwrap_or(Path::new("."));
                    let path = base.join(target);
                    // lstat, like Nix's pathExists: a dangling symlink counts as present and
                    // is then skipped as unreadable.
                    if std::fs::symlink_metadata(&path).is_err() {
                        if *keyword == "include" {
                            return Err(ConfError::IncludeNotFound { origin, path });
                        }
                        continue;
                    }
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(ConfError::IncludeTooDeep { origin, path });
                    }
                    if let Some(included) = self.read_conf(&path, Some(&origin)) {
                        self.parse(&included, Some(&path), depth + 1, out)?;
                    }
                }
                [name, "=", value @ ..] => {
                    out.push(Assignment { name: name.to_string(), value: value.join(" "), origin })
                }
                _ => return Err(ConfError::Syntax { origin, line: raw.trim_end_matches('\r').to_string() }),
            }
        }
        Ok(())
    }
}
