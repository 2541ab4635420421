//! Lines, comments, `;` entries and `@file` includes (docs/machines-file.md §2).
//!
//! The grammar is current Nix's. Nix 2.8–2.28.1 and Lix split on `;` before cutting comments and
//! do not trim, so the same file can mean something else (or abort every build) there; those
//! lines get a warning, because files are often shared between machines running different Nix.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Severity, Site};
use crate::{existence, machine_line, Machines, ParseContext, BLANK, REMOTE_SYSTEMS_ENV};

const OLD_NIX: &str = "Nix 2.8–2.28.1 and Lix";

pub(crate) struct Reader<'c> {
    ctx: &'c ParseContext,
    out: Machines,
    /// Canonical paths of the files being read, outermost first, to catch include cycles (Nix
    /// would recurse until it runs out of stack or file descriptors).
    open_files: Vec<PathBuf>,
    /// [`crate::MAX_MACHINES`] machines were read, and the next one was refused.
    past_the_bound: bool,
}

impl<'c> Reader<'c> {
    pub(crate) fn new(ctx: &'c ParseContext) -> Self {
        Reader { ctx, out: Machines::default(), open_files: Vec::new(), past_the_bound: false }
    }

    pub(crate) fn finish(self) -> Machines {
        self.out
    }

    /// Read the entries of `text`; `location` names it in diagnostics and origins.
    pub(crate) fn expand(&mut self, text: &str, location: &str) {
        for (index, line) in text.split('\n').enumerate() {
            let site = Site { location, line_no: index as u32 + 1, text: line };
            self.warn_old_nix_differences(&site);
            let code = &line[..line.find('#').unwrap_or(line.len())];
            let mut start = 0;
            for piece in code.split(';') {
                let lead = piece.len() - piece.trim_start_matches(BLANK).len();
                let entry = piece.trim_matches(BLANK);
                let at = start + lead;
                start += piece.len() + 1;
                if entry.is_empty() {
                    continue;
                }
                if let Some(path) = entry.strip_prefix('@') {
                    let path_at = at + 1 + (path.len() - path.trim_start_matches(BLANK).len());
                    self.include(&site, at, path.trim_matches(BLANK), path_at);
                } else if self.out.machines.len() >= crate::MAX_MACHINES {
                    self.too_many(&site, at, entry.len());
                } else {
                    machine_line::parse(&site, at, entry, self.ctx, &mut self.out);
                }
            }
        }
    }

    /// Said once, at the first machine past [`crate::MAX_MACHINES`].
    fn too_many(&mut self, site: &Site, at: usize, len: usize) {
        if self.past_the_bound {
            return;
        }
        self.past_the_bound = true;
        let max = crate::MAX_MACHINES;
        self.out.diagnostics.push(
            site.error(
                at,
                len,
                format!("more than {max} machines: this one and every one after it are ignored"),
            )
            .expected(format!("at most {max} machines"))
            .fix("remove machines, or share the cluster between several Nix hosts"),
        );
    }

    /// The file named on the command line or by the caller: nothing includes it, so a missing
    /// file is an error of the file itself.
    pub(crate) fn read_top_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        match nwh_files::read(path, nwh_files::MACHINES_FILE) {
            Ok(bytes) => self.expand_file(path, &bytes),
            Err(e) => self.out.diagnostics.push(Diagnostic::whole_file(
                Severity::Error,
                &name,
                format!("cannot read machines file '{name}': {}", describe(&e)),
            )),
        }
    }

    fn expand_file(&mut self, path: &Path, bytes: &[u8]) {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        self.open_files.push(canonical);
        // Nix reads bytes; a stray non-UTF-8 byte in a comment must not cost the whole file.
        self.expand(&String::from_utf8_lossy(bytes), &path.display().to_string());
        self.open_files.pop();
    }

    /// `@path` at byte `at` of the site's line; `path` itself starts at `path_at`.
    fn include(&mut self, site: &Site, at: usize, path: &str, path_at: usize) {
        match self.read_include(site, at, path, path_at) {
            Ok(bytes) => self.expand_file(Path::new(path), &bytes),
            Err(diagnostic) => self.out.diagnostics.push(*diagnostic),
        }
    }

    /// The contents of the file `@path` names, or why it is not read.
    fn read_include(
        &self,
        site: &Site,
        at: usize,
        path: &str,
        path_at: usize,
    ) -> Result<Vec<u8>, Box<Diagnostic>> {
        if path.is_empty() {
            let diagnostic = site
                .error(at, 1, "'@' is not followed by a file name".to_owned())
                .expected("'@' directly followed by the absolute path of a machines file")
                .fix("write '@/etc/nix/machines.d/NAME' (or remove the lone '@')");
            return Err(Box::new(diagnostic));
        }
        let file = Path::new(path);
        if !file.is_absolute() {
            return Err(Box::new(self.relative_include(site, path, path_at)));
        }
        let bytes = nwh_files::read(file, nwh_files::MACHINES_FILE)
            .map_err(|e| Box::new(unreadable_include(site, path, path_at, &e)))?;
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
        if let Some(first) = self.open_files.iter().position(|open| *open == canonical) {
            let cycle = &self.open_files[first..];
            return Err(Box::new(include_cycle(site, at, path, path_at, cycle, &canonical)));
        }
        Ok(bytes)
    }

    fn relative_include(&self, site: &Site, path: &str, path_at: usize) -> Diagnostic {
        let resolved = self.ctx.cwd.join(path);
        let what = if site.location == REMOTE_SYSTEMS_ENV {
            format!("NIX_REMOTE_SYSTEMS entry '{path}' is a relative path")
        } else {
            format!("included file '{path}' is a relative path")
        };
        let tilde = if path.starts_with('~') { "; '~' is not expanded" } else { "" };
        let message = format!(
            "{what}; the build hook runs with its working directory at '{}', so Nix would \
             read '{}' ({}){tilde}; it is not read",
            self.ctx.cwd.display(),
            resolved.display(),
            existence(&resolved),
        );
        let fix = format!(
            "replace '{path}' with the file's absolute path (run `realpath {path}` in the \
             directory you meant)"
        );
        site.error(path_at, path.len(), message).expected("an absolute path, starting with '/'").fix(fix)
    }

    /// Compare the line with how the legacy parser (split on `\n;`, cut at `#`, no trim) sees it.
    fn warn_old_nix_differences(&mut self, site: &Site) {
        let line = site.text;
        let hash = line.find('#');
        let mut start = 0;
        for piece in line.split(';') {
            let piece_at = start;
            start += piece.len() + 1;
            let kept = &piece[..piece.find('#').unwrap_or(piece.len())];
            if kept.is_empty() {
                continue;
            }
            let entry = kept.trim_matches(BLANK);
            let lead = kept.len() - kept.trim_start_matches(BLANK).len();
            let in_comment = hash.is_some_and(|h| piece_at > h);
            let diagnostic = if entry.is_empty() {
                let (what, fix) = if kept == "\r" {
                    (
                        "this line holds only a carriage return (Windows line end)",
                        "convert the file to Unix line ends (e.g. `dos2unix FILE`)",
                    )
                } else if piece_at == 0 && hash.is_some() {
                    ("this comment line is indented", "start the comment at the beginning of the line")
                } else {
                    ("this entry holds only whitespace", "remove the whitespace (or the ';' before it)")
                };
                let message = format!(
                    "{what}; {OLD_NIX} stop every build on it (\"bad machine specification: store \
                     URL was not found at the first column of a row\"); current Nix skips it"
                );
                site.warning(piece_at, kept.len(), message)
                    .expected(format!("no whitespace-only entries, if {OLD_NIX} also read this"))
                    .fix(fix)
            } else if in_comment {
                let as_what = if entry.starts_with('@') { "an include" } else { "another machine" };
                let message = format!(
                    "{OLD_NIX} read '{entry}' after the ';' in this comment as {as_what}; current \
                     Nix ignores the whole comment"
                );
                site.warning(piece_at + lead, entry.len(), message)
                    .expected(format!("no ';' inside comments, if {OLD_NIX} also read this"))
                    .fix("remove the ';' from the comment")
            } else if lead > 0 && entry.starts_with('@') {
                let message = format!(
                    "{OLD_NIX} do not treat an indented '@' as an include; they take '{entry}' as \
                     a machine and fail to connect"
                );
                let expected = format!("'@' first in the entry, if {OLD_NIX} also read this");
                site.warning(piece_at, kept.len(), message)
                    .expected(expected)
                    .fix("remove the whitespace before '@' (after a ';' too: 'a ;@/path')")
            } else {
                continue;
            };
            self.out.diagnostics.push(diagnostic);
        }
    }

    /// Nix ≤ 2.23 and Lix join `NIX_REMOTE_SYSTEMS` files with a space into one bogus path.
    pub(crate) fn warn_multi_file_env(&mut self, value: &str) {
        let files = value.lines().filter(|l| l.starts_with('@')).count();
        if files > 1 {
            let site =
                Site { location: REMOTE_SYSTEMS_ENV, line_no: 2, text: value.lines().nth(1).unwrap_or("") };
            let message = format!(
                "NIX_REMOTE_SYSTEMS names {files} files; Nix ≤ 2.23 and Lix join them with spaces \
                 into one path that does not exist and silently use none of them"
            );
            self.out.diagnostics.push(
                site.warning(0, site.text.len(), message)
                    .expected("one file, if Nix ≤ 2.23 or Lix also read this variable")
                    .fix(
                        "name one file whose lines include the others ('@/path/to/other'), or \
                         set 'builders' instead",
                    ),
            );
        }
    }
}

/// Why an included file is not read: missing is a warning (Nix skips it as well), anything else
/// an error (Nix would stop every build).
fn unreadable_include(site: &Site, path: &str, path_at: usize, e: &std::io::Error) -> Diagnostic {
    if e.kind() == ErrorKind::NotFound {
        let remove = if site.location == REMOTE_SYSTEMS_ENV {
            format!("remove '{path}' from NIX_REMOTE_SYSTEMS")
        } else {
            format!("remove the '@{path}' entry")
        };
        let message = format!(
            "{}; Nix skips a missing file silently, so no machine from it is used",
            missing_file_message(path)
        );
        return site
            .warning(path_at, path.len(), message)
            .expected("an existing machines file")
            .fix(format!("create '{path}', correct the path, or {remove}"));
    }
    let message = format!(
        "cannot read machines file '{path}': {}; it is skipped (Nix would stop every \
         build here)",
        describe(e)
    );
    site.error(path_at, path.len(), message).expected("a readable regular file").fix(read_fix(e, path))
}

/// How the warning about a missing included file starts; [`Diagnostic::is_missing_file`] knows
/// it by this.
pub(crate) fn missing_file_message(path: &str) -> String {
    format!("machines file '{path}' does not exist")
}

/// `cycle` is the open files from the first reading of `canonical` on.
fn include_cycle(
    site: &Site,
    at: usize,
    path: &str,
    path_at: usize,
    cycle: &[PathBuf],
    canonical: &Path,
) -> Diagnostic {
    let chain: Vec<String> = cycle
        .iter()
        .map(PathBuf::as_path)
        .chain(std::iter::once(canonical))
        .map(|p| p.display().to_string())
        .collect();
    let message = format!(
        "include cycle: {}; the file is not read again (Nix would recurse until it fails)",
        chain.join(" -> ")
    );
    site.error(at, path_at + path.len() - at, message)
        .expected("includes that form a tree, each file read once")
        .fix(format!("remove the '@{path}' entry from {}", site.location))
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file".to_owned(),
        ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

fn read_fix(e: &std::io::Error, path: &str) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "make '{path}' readable by the user running the hook (root under nix-daemon): \
             `chmod a+r {path}`"
        ),
        ErrorKind::IsADirectory => {
            format!("name a file, not a directory (e.g. '@{}/NAME')", path.trim_end_matches('/'))
        }
        ErrorKind::InvalidInput => format!("name a regular file instead of '{path}'"),
        ErrorKind::FileTooLarge => format!("check that '{path}' is the machines file you meant"),
        _ => format!("check that '{path}' is a readable machines file"),
    }
}
