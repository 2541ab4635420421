//! The content address of a local store path, which a daemon that does not trust us needs to
//! accept a path without a signature. `nix-store --dump-db` does not print it, so it is found
//! the way Nix made the path: a store path is a hash of how its contents were hashed, so the
//! right candidate is the one whose recomputed path is the path itself.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::local::PathInfo;

/// The content address of `path` (`text:sha256:…` for a `.drv` or `builtins.toFile` file,
/// `fixed:r:sha256:…` for a source added whole), or `None` when it is not content-addressed
/// in either way (an input-addressed output).
pub fn of(path: &str, info: &PathInfo) -> Option<String> {
    let (store_dir, base) = path.rsplit_once('/')?;
    let name = base.split_once('-')?.1;
    let nar_sha256 = nwh_nar::hash::parse_sha256(&info.nar_hash)?;
    // Added whole ("source"): the NAR's sha256, no references to other paths.
    if info.references.is_empty() && store_path(store_dir, "source", &nar_sha256, name) == path {
        return Some(format!("fixed:r:sha256:{}", nwh_nar::hash::nix32_encode(&nar_sha256)));
    }
    // Text (derivations, `builtins.toFile`): the file's own sha256, its references in the type.
    let contents = std::fs::read(Path::new(path)).ok()?;
    let sha256: [u8; 32] = Sha256::digest(&contents).into();
    let references: BTreeSet<&str> = info.references.iter().map(String::as_str).collect();
    let kind = std::iter::once("text").chain(references).collect::<Vec<_>>().join(":");
    (store_path(store_dir, &kind, &sha256, name) == path)
        .then(|| format!("text:sha256:{}", nwh_nar::hash::nix32_encode(&sha256)))
}

/// Nix's store path for contents of `kind` whose sha256 is `sha256`: the sha256 of
/// `kind:sha256:<base 16>:<store dir>:<name>`, folded to 20 bytes, in Nix's base 32.
fn store_path(store_dir: &str, kind: &str, sha256: &[u8; 32], name: &str) -> String {
    let fingerprint = format!("{kind}:sha256:{}:{store_dir}:{name}", nwh_nar::hash::base16_encode(sha256));
    let digest = Sha256::digest(fingerprint.as_bytes());
    let mut folded = [0u8; 20];
    for (i, byte) in digest.iter().enumerate() {
        folded[i % 20] ^= byte;
    }
    format!("{store_dir}/{}-{name}", nwh_nar::hash::nix32_encode(&folded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_as_nix_makes_them() {
        // What Nix 2.8 made of a file holding "hello\n": `builtins.toFile "hello" "hello\n"`
        // (text) and `nix-store --add hello` (the file added whole, its NAR hashed).
        let sha256: [u8; 32] = Sha256::digest(b"hello\n").into();
        assert_eq!(
            store_path("/nix/store", "text", &sha256, "hello"),
            "/nix/store/nmrmdcw1bfnl35a893n7nyhw4xa5vy08-hello"
        );
        let nar_sha256 =
            nwh_nar::hash::parse_sha256("1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13")
                .unwrap();
        assert_eq!(
            store_path("/nix/store", "source", &nar_sha256, "hello"),
            "/nix/store/gwina1sjk7g95wq6fxc6b7s1hza53h74-hello"
        );
    }
}
