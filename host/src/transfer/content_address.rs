//! The content address of a local store path, which a daemon that does not trust us needs to
//! accept a path without a signature. `nix-store --dump-db` does not print it, so it is found
//! the way Nix made the path: a store path is a hash of how its contents were hashed, so the
//! right candidate is the one whose recomputed path is the path itself.

use std::collections::BTreeSet;

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
    let contents = std::fs::read(super::local_store::get().ok()?.real(path)).ok()?;
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

/// How a fixed-output derivation fixes its output: the hash of the NAR (`r:`) or of the one
/// file's contents, and which hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub recursive: bool,
    pub algo: Algo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Fixed {
    /// How `output` is fixed, or why this hook cannot check it (a method newer than those it
    /// knows): such a derivation is declined before it is accepted ([`super::cannot_finish`]).
    pub fn of(output: &nwh_drv::Output) -> Result<Fixed, String> {
        let (recursive, algo) = match output.hash_algo.strip_prefix("r:") {
            Some(algo) => (true, algo),
            None => (false, output.hash_algo.as_str()),
        };
        let algo = match algo {
            "md5" => Algo::Md5,
            "sha1" => Algo::Sha1,
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => {
                return Err(format!(
                    "its output is fixed by `{}`, which this hook cannot check",
                    output.hash_algo
                ))
            }
        };
        Ok(Fixed { recursive, algo })
    }
}

/// Checks the output `path` of a fixed-output derivation, unpacked but not yet valid, against
/// the hash its derivation fixed: whatever a builder sends for it, it must be those contents,
/// with no references (Nix refuses references from a fixed output too).
pub fn check_fixed(
    path: &str,
    output: &nwh_drv::Output,
    nar: &nwh_nar::NarSummary,
    references: &BTreeSet<String>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let fixed = Fixed::of(output).map_err(|why| anyhow::anyhow!("{path}: {why}"))?;
    anyhow::ensure!(
        references.is_empty(),
        "the builder says the fixed output {path} refers to {references:?}; a fixed output refers to nothing"
    );
    let real = super::local_store::get()?.real(path);
    let actual = match fixed {
        Fixed { recursive: true, algo: Algo::Sha256 } => nar.sha256.to_vec(),
        Fixed { recursive: true, algo } => {
            { digest(algo, |mut w| nwh_nar::dump::dump(&real, &mut w).map(drop)) }
                .with_context(|| format!("hashing the NAR of {path}"))?
        }
        Fixed { recursive: false, algo } => {
            let meta = std::fs::symlink_metadata(&real)?;
            anyhow::ensure!(
                meta.is_file(),
                "the fixed output {path} is hashed flat, so it must be one regular file, but the builder sent a {}",
                if meta.is_dir() { "directory" } else { "symbolic link" }
            );
            let mut file = std::fs::File::open(&real)?;
            digest(algo, |w| std::io::copy(&mut file, w).map(drop))
                .with_context(|| format!("hashing {path}"))?
        }
    };
    let actual = nwh_nar::hash::base16_encode(&actual);
    anyhow::ensure!(
        actual == output.hash,
        "the builder sent other contents for the fixed output {path}: they hash ({}) to {actual}, but the \
         derivation fixes {}",
        output.hash_algo,
        output.hash
    );
    Ok(())
}

/// The hash of what `feed` writes.
fn digest(
    algo: Algo,
    feed: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let mut hasher = Hasher::new(algo);
    feed(&mut hasher)?;
    Ok(hasher.finish())
}

/// One of the hashes a fixed output may be fixed by, fed as a writer.
enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Md5 => Hasher::Md5(md5::Md5::new()),
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Hasher::Md5(h) => h.update(buf),
            Hasher::Sha1(h) => h.update(buf),
            Hasher::Sha256(h) => h.update(buf),
            Hasher::Sha512(h) => h.update(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The NAR of a fixed output on its way from a builder to Nix's hook (builder mode), checked
/// against the hash its derivation fixes before its last byte is passed on. Nix's hook
/// imports what a builder sends for a fixed output without that check; cut one byte short,
/// a NAR with other contents fails its import.
pub struct FixedRelay<'a, W: std::io::Write + ?Sized> {
    inner: &'a mut W,
    held: Option<u8>,
    pipe: Option<std::io::PipeWriter>,
    /// The hash of what went through, as the output is fixed by.
    hashing: std::thread::JoinHandle<std::io::Result<Vec<u8>>>,
    expected: String,
}

impl<'a, W: std::io::Write + ?Sized> FixedRelay<'a, W> {
    pub fn new(inner: &'a mut W, output: &nwh_drv::Output) -> anyhow::Result<FixedRelay<'a, W>> {
        let fixed = Fixed::of(output).map_err(|why| anyhow::anyhow!("{}: {why}", output.path))?;
        let (reader, pipe) = std::io::pipe()?;
        let hashing = std::thread::Builder::new().name("fixed-output".into()).spawn(move || {
            // Both hashes in the one pass: the NAR's, and its root file's contents'.
            let (mut nar, mut contents) = (Hasher::new(fixed.algo), Hasher::new(fixed.algo));
            let mut reader = std::io::BufReader::new(reader);
            let (_, regular) = nwh_nar::copy_nar_and_root_contents(&mut reader, &mut nar, &mut contents)
                .map_err(std::io::Error::other)?;
            match (fixed.recursive, regular) {
                (true, _) => Ok(nar.finish()),
                (false, true) => Ok(contents.finish()),
                (false, false) => {
                    Err(std::io::Error::other("a fixed output hashed flat must be one regular file"))
                }
            }
        })?;
        Ok(FixedRelay { inner, held: None, pipe: Some(pipe), hashing, expected: output.hash.clone() })
    }

    /// Passes the last byte on if what went through has the fixed hash.
    pub fn finish(mut self) -> anyhow::Result<()> {
        drop(self.pipe.take());
        let actual = self
            .hashing
            .join()
            .map_err(|_| anyhow::anyhow!("the thread hashing a fixed output panicked"))??;
        let actual = nwh_nar::hash::base16_encode(&actual);
        anyhow::ensure!(
            actual == self.expected,
            "other contents for the fixed output: they hash to {actual}, but the derivation fixes {}",
            self.expected
        );
        self.inner.write_all(self.held.as_slice())?;
        Ok(())
    }
}

impl<W: std::io::Write + ?Sized> std::io::Write for FixedRelay<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some((&last, rest)) = buf.split_last() else { return Ok(0) };
        self.pipe.as_mut().expect("open until finish").write_all(buf)?;
        self.inner.write_all(self.held.as_slice())?;
        self.inner.write_all(rest)?;
        self.held = Some(last);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

    fn fixed(algo: &str, hash: &[u8]) -> nwh_drv::Output {
        nwh_drv::Output {
            path: String::new(),
            hash_algo: algo.into(),
            hash: nwh_nar::hash::base16_encode(hash),
        }
    }

    #[test]
    fn a_fixed_output_is_checked_against_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        std::fs::write(&file, "hello").unwrap();
        let path = file.to_str().unwrap();
        let mut nar_bytes = Vec::new();
        let size = nwh_nar::dump::dump(&file, &mut nar_bytes).unwrap();
        let nar = nwh_nar::NarSummary { size, sha256: Sha256::digest(&nar_bytes).into() };
        let none = BTreeSet::new();
        let flat: [u8; 32] = Sha256::digest(b"hello").into();
        check_fixed(path, &fixed("sha256", &flat), &nar, &none).unwrap();
        check_fixed(path, &fixed("r:sha256", &nar.sha256), &nar, &none).unwrap();
        let sha1: [u8; 20] = sha1::Sha1::digest(&nar_bytes).into();
        check_fixed(path, &fixed("r:sha1", &sha1), &nar, &none).unwrap();
        let md5: [u8; 16] = md5::Md5::digest(b"hello").into();
        check_fixed(path, &fixed("md5", &md5), &nar, &none).unwrap();

        let other: [u8; 32] = Sha256::digest(b"hellO").into();
        let err = check_fixed(path, &fixed("sha256", &other), &nar, &none).unwrap_err().to_string();
        assert!(err.contains("other contents for the fixed output"), "{err}");
        assert!(check_fixed(path, &fixed("r:sha256", &other), &nar, &none).is_err());
        let refs = BTreeSet::from(["/nix/store/x".to_string()]);
        assert!(check_fixed(path, &fixed("sha256", &flat), &nar, &refs)
            .unwrap_err()
            .to_string()
            .contains("refers"));
        let flat_of_a_dir = check_fixed(dir.path().to_str().unwrap(), &fixed("sha256", &flat), &nar, &none);
        assert!(flat_of_a_dir.unwrap_err().to_string().contains("directory"));
        assert!(Fixed::of(&fixed("r:blake3", &flat)).unwrap_err().contains("cannot check"));
        assert!(Fixed::of(&fixed("git:sha1", &sha1)).is_err());
    }

    #[test]
    fn a_relayed_fixed_output_keeps_its_last_byte_unless_it_has_the_hash() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        std::fs::write(&file, "hello").unwrap();
        let mut nar = Vec::new();
        nwh_nar::dump::dump(&file, &mut nar).unwrap();
        let flat: [u8; 32] = Sha256::digest(b"hello").into();
        let nar_sha256: [u8; 32] = Sha256::digest(&nar).into();
        let other: [u8; 32] = Sha256::digest(b"other").into();
        for (algo, hash, passes) in [
            ("sha256", flat, true),
            ("r:sha256", nar_sha256, true),
            ("sha256", other, false),
            ("r:sha256", flat, false),
        ] {
            let mut sent = Vec::new();
            let mut relay = FixedRelay::new(&mut sent, &fixed(algo, &hash)).unwrap();
            for chunk in nar.chunks(7) {
                relay.write_all(chunk).unwrap();
            }
            let finished = relay.finish();
            assert_eq!(finished.is_ok(), passes, "{algo}: {finished:?}");
            let expected = if passes { &nar[..] } else { &nar[..nar.len() - 1] };
            assert_eq!(sent, expected, "{algo}");
        }
    }
}
