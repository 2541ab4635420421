//! Store paths of one store: `<store dir>/<hash>-<name>`, with the rules Nix's own
//! `parseStorePath` applies (docs/security.md, "What a builder may send").
//!
//! Every path a builder names (an output, a reference, a deriver) is checked here before the
//! hook uses it, because what is used becomes a file created as root, a line of the text
//! `nix-store --register-validity` reads, or a path Nix's own hook is served. A check that is
//! stricter than Nix's would refuse real outputs; one that is looser lets a builder name
//! `/root/x`, `/nix/store/../../etc` or a reference with a newline in it.

use std::fmt;

/// Characters of a store path's hash part: Nix's base 32 (no `e`, `o`, `u`, `t`).
const HASH_CHARS: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the hash part: 160 bits in base 32.
pub const HASH_LEN: usize = 32;

/// Longest name Nix accepts (`StorePath::MaxPathLen`).
pub const MAX_NAME_LEN: usize = 211;

/// Where the store keeps its paths when nothing says otherwise.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Why a string is not a store path of this store. The offending string is shown escaped, so
/// that a control character in it cannot forge a line of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorePathError {
    #[error("{path} is not in the store directory {store_dir}")]
    OutsideStore { path: Escaped, store_dir: String },
    #[error("{path} is not directly in {store_dir} (a store path has one component after it)")]
    NotDirectlyInStore { path: Escaped, store_dir: String },
    #[error("{path} has no hash part of {HASH_LEN} base-32 characters followed by '-'")]
    BadHashPart { path: Escaped },
    #[error("{path} has a name of {len} characters; Nix allows at most {MAX_NAME_LEN}")]
    NameTooLong { path: Escaped, len: usize },
    #[error("{path} has the name {name}, which Nix does not allow ({why})")]
    BadName { path: Escaped, name: Escaped, why: &'static str },
    #[error("the store directory {dir} is not an absolute path without '.' or '..' components")]
    BadStoreDir { dir: Escaped },
}

/// A string from elsewhere, printed with anything unusual escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped(pub String);

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn escaped(s: &str) -> Escaped {
    Escaped(s.to_string())
}

/// The directory of a store, as Nix sees it: absolute, normalised, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: &str) -> Result<StoreDir, StorePathError> {
        let trimmed = dir.trim_end_matches('/');
        let normal = trimmed.starts_with('/')
            && trimmed[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
            && !trimmed.chars().any(char::is_control);
        if !normal {
            return Err(StorePathError::BadStoreDir { dir: escaped(dir) });
        }
        Ok(StoreDir(trimmed.to_string()))
    }

    /// The store directory of the Nix that runs this process: `NIX_STORE_DIR` when set (Nix
    /// passes its environment on to its hook), else [`DEFAULT_STORE_DIR`].
    pub fn from_env() -> Result<StoreDir, StorePathError> {
        match std::env::var("NIX_STORE_DIR") {
            Ok(dir) if !dir.is_empty() => StoreDir::new(&dir),
            _ => StoreDir::new(DEFAULT_STORE_DIR),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that `path` is a store path of this store: this directory, one component after
    /// it, a hash part of Nix's base 32, and a name Nix accepts.
    pub fn check(&self, path: &str) -> Result<(), StorePathError> {
        let base = path
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::OutsideStore { path: escaped(path), store_dir: self.0.clone() })?;
        if base.contains('/') {
            return Err(StorePathError::NotDirectlyInStore {
                path: escaped(path),
                store_dir: self.0.clone(),
            });
        }
        let hash_ok = base.len() > HASH_LEN
            && base.as_bytes()[..HASH_LEN].iter().all(|b| HASH_CHARS.contains(b))
            && base.as_bytes()[HASH_LEN] == b'-';
        if !hash_ok {
            return Err(StorePathError::BadHashPart { path: escaped(path) });
        }
        check_name(path, &base[HASH_LEN + 1..])
    }

    /// [`StoreDir::check`] over several paths, stopping at the first bad one.
    pub fn check_all<'a>(&self, paths: impl IntoIterator<Item = &'a String>) -> Result<(), StorePathError> {
        paths.into_iter().try_for_each(|p| self.check(p))
    }
}

/// Nix's rule for the name part: 1 to 211 characters of `A-Za-z0-9+-._?=`, and not `.`, `..`
/// or starting with `.-` or `..-` (which would read as those).
fn check_name(path: &str, name: &str) -> Result<(), StorePathError> {
    let bad = |why| Err(StorePathError::BadName { path: escaped(path), name: escaped(name), why });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { path: escaped(path), len: name.len() });
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)) {
        return bad("only letters, digits and + - . _ ? = may appear in it");
    }
    let first = name.split('-').next().unwrap_or_default();
    if first == "." || first == ".." {
        return bad("it reads as '.' or '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-hello-2.12";

    fn nix() -> StoreDir {
        StoreDir::new("/nix/store/").unwrap()
    }

    #[test]
    fn real_store_paths_pass() {
        let dir = nix();
        for p in [
            GOOD,
            "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x.drv",
            "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-.hidden",
            "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-a+b_c?d=e",
        ] {
            assert_eq!(dir.check(p), Ok(()), "{p}");
        }
        assert_eq!(dir.check(&format!("{GOOD}{}", "x".repeat(MAX_NAME_LEN - 10))), Ok(()));
    }

    #[test]
    fn what_an_attacker_names_is_refused() {
        let dir = nix();
        let refused = |p: &str| dir.check(p).unwrap_err().to_string();
        assert!(refused("/root/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x").contains("not in the store directory"));
        assert!(refused("/nix/storex/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x").contains("not in the store"));
        assert!(refused("/nix/store/../../etc/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x").contains("not directly"));
        assert!(refused(&format!("{GOOD}/bin")).contains("not directly"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3fe-x").contains("hash part"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff").contains("hash part"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff_x").contains("hash part"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-").contains("empty"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-..").contains("'.' or '..'"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-.-x").contains("'.' or '..'"));
        assert!(refused(&format!("{GOOD}{}", "x".repeat(MAX_NAME_LEN))).contains("at most 211"));
        // A newline would be a second record of the registration text.
        let forged = format!("{GOOD}\n{}\n", "0".repeat(64));
        let message = refused(&forged);
        assert!(message.contains("only letters"), "{message}");
        assert!(!message.contains('\n'), "the message itself stays one line: {message}");
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-a b").contains("only letters"));
        assert!(refused("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-é").contains("only letters"));
    }

    #[test]
    fn another_store_dir_is_its_own() {
        let dir = StoreDir::new("/tmp/other/store").unwrap();
        assert_eq!(dir.check("/tmp/other/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x"), Ok(()));
        assert!(dir.check(GOOD).is_err());
        for bad in ["relative/store", "/nix/../store", "/", "/nix//store", "/nix/./store"] {
            assert!(StoreDir::new(bad).is_err(), "{bad}");
        }
    }
}
