//! The content address of a local store path, which a daemon that does not trust us needs to
//! accept a path without a signature. `nix-store --dump-db` does not print it, so it is found
//! the way Nix made the path: a store path is a hash of how its contents were hashed, so the
//! right candidate is the one whose recomputed path is the path itself.
//!
//! Also what comes back for content-addressed outputs is checked here: a fixed output against
//! the hash its derivation fixes ([`check_fixed`]), a floating one against the path the
//! builder's realisation names for it ([`check_floating`]).

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

/// What a builder's realisation claims for a floating content-addressed output: that
/// `claimed` is the path of the output `output_name` of a derivation called `drv_name`, with
/// `references`. The claim holds if the contents that arrive for it are those Nix would give
/// that path, so that a builder, trusted for the contents of the outputs it was asked to build,
/// names nothing else. Nix names the output `<drv_name>` (`out`) or `<drv_name>-<output_name>`,
/// and hashes its contents as the output's method and algorithm say, modulo its own hash part
/// (a self-reference counts as zeros). For a self-referencing output the rules of the builder's
/// release differ: up to Nix 2.16 the positions of the self-references are hashed too
/// (NixOS/nix 3ebe134, first in 2.17, dropped them), so either path is accepted.
pub struct FloatingClaim {
    claimed: String,
    store_dir: String,
    hash_part: String,
    name: String,
    output_name: String,
    fixed: Fixed,
    self_reference: bool,
    others: Vec<String>,
}

impl FloatingClaim {
    /// The claim, if its name is that of the output (the contents are checked later).
    pub fn new(
        claimed: &str,
        drv_name: &str,
        output_name: &str,
        output: &nwh_drv::Output,
        references: &BTreeSet<String>,
    ) -> anyhow::Result<FloatingClaim> {
        use anyhow::{bail, ensure};
        let name =
            if output_name == "out" { drv_name.to_string() } else { format!("{drv_name}-{output_name}") };
        let Some((store_dir, base)) = claimed.rsplit_once('/') else {
            bail!("'{claimed}' is not a store path")
        };
        let Some((hash_part, claimed_name)) = base.split_once('-') else {
            bail!("'{claimed}' is not a store path")
        };
        ensure!(
            claimed_name == name,
            "the builder says output `{output_name}` is {claimed}, but Nix names that output '{name}'"
        );
        let fixed = Fixed::of(output).map_err(|why| anyhow::anyhow!("output `{output_name}`: {why}"))?;
        Ok(FloatingClaim {
            claimed: claimed.to_string(),
            store_dir: store_dir.to_string(),
            hash_part: hash_part.to_string(),
            name,
            output_name: output_name.to_string(),
            fixed,
            self_reference: references.contains(claimed),
            others: references.iter().filter(|r| *r != claimed).cloned().collect(),
        })
    }

    /// What hashes the contents: the NAR (`r:`) or the one file's contents, as the output says.
    fn hasher(&self) -> ModuloHasher {
        ModuloHasher::new(self.fixed.algo, self.hash_part.as_bytes())
    }

    /// Whether the contents `hashed` give the claimed path.
    fn holds(&self, hashed: ModuloHasher) -> anyhow::Result<()> {
        let (since_2_17, up_to_2_16) = hashed.finish();
        let path_of = |hash: &[u8]| -> Option<String> {
            if self.fixed.recursive && self.fixed.algo == Algo::Sha256 {
                let kind: Vec<&str> = std::iter::once("source")
                    .chain(self.others.iter().map(String::as_str))
                    .chain(self.self_reference.then_some("self"))
                    .collect();
                Some(store_path(&self.store_dir, &kind.join(":"), hash.try_into().ok()?, &self.name))
            } else {
                // Nix allows no references here (2.34 says so, 2.8 fails an assertion).
                if self.self_reference || !self.others.is_empty() {
                    return None;
                }
                let algo = match self.fixed.algo {
                    Algo::Md5 => "md5",
                    Algo::Sha1 => "sha1",
                    Algo::Sha256 => "sha256",
                    Algo::Sha512 => "sha512",
                };
                let method = if self.fixed.recursive { "r:" } else { "" };
                let inner = format!("fixed:out:{method}{algo}:{}:", nwh_nar::hash::base16_encode(hash));
                Some(store_path(
                    &self.store_dir,
                    "output:out",
                    &Sha256::digest(inner.as_bytes()).into(),
                    &self.name,
                ))
            }
        };
        let expected: Vec<String> = [since_2_17, up_to_2_16].iter().filter_map(|h| path_of(h)).collect();
        anyhow::ensure!(
            expected.contains(&self.claimed),
            "the builder says output `{}` is {}, but what it sent for it is {}",
            self.output_name,
            self.claimed,
            expected
                .first()
                .map_or("not something Nix content-addresses (it has references)".to_string(), |p| p.clone())
        );
        Ok(())
    }

    fn flat_needs_one_file(&self) -> String {
        format!("output `{}` is hashed flat, so {} must be one regular file", self.output_name, self.claimed)
    }
}

/// Checks the path `claimed` that a builder's realisation names for the floating
/// content-addressed `output` (see [`FloatingClaim`]) against what arrived for it, unpacked at
/// `real`.
pub fn check_floating(
    claimed: &str,
    drv_name: &str,
    output_name: &str,
    output: &nwh_drv::Output,
    real: &std::path::Path,
    references: &BTreeSet<String>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let claim = FloatingClaim::new(claimed, drv_name, output_name, output, references)?;
    let mut hasher = claim.hasher();
    if claim.fixed.recursive {
        nwh_nar::dump::dump(real, &mut hasher).with_context(|| format!("hashing the NAR of {claimed}"))?;
    } else {
        anyhow::ensure!(std::fs::symlink_metadata(real)?.is_file(), "{}", claim.flat_needs_one_file());
        std::io::copy(&mut std::fs::File::open(real)?, &mut hasher)
            .with_context(|| format!("hashing {claimed}"))?;
    }
    claim.holds(hasher)
}

/// Nix's `HashModuloSink`: hashes what is written with every occurrence of `modulus` (a path's
/// hash part) replaced by as many zero bytes; [`ModuloHasher::finish`] gives the hash as Nix 2.17
/// and later make it, and as Nix up to 2.16 made it, which appended `|<offset>` for each
/// occurrence (the same when there is none).
struct ModuloHasher {
    hasher: Hasher,
    modulus: Vec<u8>,
    /// The bytes not yet passed on: they may begin an occurrence.
    held: Vec<u8>,
    pos: u64,
    matches: Vec<u64>,
}

impl ModuloHasher {
    fn new(algo: Algo, modulus: &[u8]) -> ModuloHasher {
        ModuloHasher {
            hasher: Hasher::new(algo),
            modulus: modulus.to_vec(),
            held: Vec::new(),
            pos: 0,
            matches: Vec::new(),
        }
    }

    fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.hasher.update(&held);
        let now = self.hasher.clone().finish();
        for pos in &self.matches {
            self.hasher.update(format!("|{pos}").as_bytes());
        }
        (now, self.hasher.finish())
    }
}

impl std::io::Write for ModuloHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = std::mem::take(&mut self.held);
        s.extend_from_slice(buf);
        let n = self.modulus.len();
        let mut j = 0;
        while n > 0 && j + n <= s.len() {
            if s[j..j + n] == self.modulus[..] {
                self.matches.push(self.pos + j as u64);
                s[j..j + n].fill(0);
                j += n;
            } else {
                j += 1;
            }
        }
        // Keep the last n - 1 bytes: an occurrence may continue in the next write.
        let keep = if s.len() < n { s.len() } else { n.saturating_sub(1) };
        let consumed = s.len() - keep;
        self.hasher.update(&s[..consumed]);
        self.pos += consumed as u64;
        self.held = s[consumed..].to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
#[derive(Clone)]
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

    fn update(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let _ = self.write(bytes);
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

/// The NAR of a content-addressed output on its way from a builder to Nix's hook (builder
/// mode), checked before its last byte is passed on: a fixed output against the hash its
/// derivation fixes, a floating one against the path the builder's realisation names. Nix's
/// hook imports what a builder sends for either without that check; cut one byte short, a NAR
/// with other contents fails its import.
pub struct CheckedRelay<'a, W: std::io::Write + ?Sized> {
    inner: &'a mut W,
    held: Option<u8>,
    pipe: Option<std::io::PipeWriter>,
    /// Reads what went through and says whether it is what was expected.
    checking: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl<'a, W: std::io::Write + ?Sized> CheckedRelay<'a, W> {
    /// For the fixed `output`: what goes through must hash to the derivation's hash.
    pub fn fixed(inner: &'a mut W, output: &nwh_drv::Output) -> anyhow::Result<CheckedRelay<'a, W>> {
        let fixed = Fixed::of(output).map_err(|why| anyhow::anyhow!("{}: {why}", output.path))?;
        let expected = output.hash.clone();
        CheckedRelay::new(inner, "fixed-output", move |reader| {
            // Both hashes in the one pass: the NAR's, and its root file's contents'.
            let (mut nar, mut contents) = (Hasher::new(fixed.algo), Hasher::new(fixed.algo));
            let (_, regular) = nwh_nar::copy_nar_and_root_contents(reader, &mut nar, &mut contents)?;
            let actual = match (fixed.recursive, regular) {
                (true, _) => nar.finish(),
                (false, true) => contents.finish(),
                (false, false) => anyhow::bail!("a fixed output hashed flat must be one regular file"),
            };
            let actual = nwh_nar::hash::base16_encode(&actual);
            anyhow::ensure!(
                actual == expected,
                "other contents for the fixed output: they hash to {actual}, but the derivation fixes {expected}"
            );
            Ok(())
        })
    }

    /// For a floating output: what goes through must be the contents of the claimed path.
    pub fn floating(inner: &'a mut W, claim: FloatingClaim) -> anyhow::Result<CheckedRelay<'a, W>> {
        CheckedRelay::new(inner, "floating-output", move |reader| {
            let (mut nar, mut contents) = (claim.hasher(), claim.hasher());
            let (_, regular) = nwh_nar::copy_nar_and_root_contents(reader, &mut nar, &mut contents)?;
            match (claim.fixed.recursive, regular) {
                (true, _) => claim.holds(nar),
                (false, true) => claim.holds(contents),
                (false, false) => anyhow::bail!("{}", claim.flat_needs_one_file()),
            }
        })
    }

    fn new(
        inner: &'a mut W,
        thread: &str,
        check: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<CheckedRelay<'a, W>> {
        let (reader, pipe) = std::io::pipe()?;
        let checking = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || check(&mut std::io::BufReader::new(reader)))?;
        Ok(CheckedRelay { inner, held: None, pipe: Some(pipe), checking })
    }

    /// Passes the last byte on if what went through is what was expected.
    pub fn finish(mut self) -> anyhow::Result<()> {
        drop(self.pipe.take());
        self.checking.join().map_err(|_| anyhow::anyhow!("the thread checking an output panicked"))??;
        self.inner.write_all(self.held.as_slice())?;
        Ok(())
    }
}

impl<W: std::io::Write + ?Sized> std::io::Write for CheckedRelay<'_, W> {
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

    /// Floating outputs Nix built (from crates/drv/tests/fixtures/generate.nix, and two more
    /// whose builder scripts are quoted below), remade here with the same contents: the path
    /// each got is the only one accepted for them.
    mod floating {
        use super::*;
        use std::path::Path;

        const SELF_2_8: &str = "/nix/store/rmzwlmzqlxzqz3qydf6p34hr22v3ch8g-nwh-drvtest-floating-self";
        const SELF_2_34: &str = "/nix/store/brz14vzmjpi3kz8yyfc369cwv8awdh1w-nwh-drvtest-floating-self";
        const SRC: &str = "/nix/store/321dz3ryzh8vh3szdxr3hkdliy3w7l2j-src.txt";

        fn output(algo: &str) -> nwh_drv::Output {
            nwh_drv::Output { path: String::new(), hash_algo: algo.into(), hash: String::new() }
        }

        fn file(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        /// `/bin/mkdir $out; echo $out > $out/me; echo x > $out/x`, as built at `out`.
        fn self_referring(dir: &Path, out: &str) -> std::path::PathBuf {
            let root = dir.join(out.rsplit_once('/').unwrap().1);
            std::fs::create_dir(&root).unwrap();
            file(&root, "me", &format!("{out}\n"));
            file(&root, "x", "x\n");
            root
        }

        fn refs(paths: &[&str]) -> BTreeSet<String> {
            paths.iter().map(|p| p.to_string()).collect()
        }

        #[test]
        fn the_paths_nix_gave_them_are_accepted() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let none = BTreeSet::new();
            // `echo > $out`, recursive sha256 (Nix 2.8).
            check_floating(
                "/nix/store/h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating",
                "nwh-drvtest-floating",
                "out",
                &output("r:sha256"),
                &file(d, "floating", "\n"),
                &none,
            )
            .unwrap();
            // Two outputs hashed flat (Nix 2.8): `out` takes the derivation's name.
            check_floating(
                "/nix/store/nc4fd5yqjb4lfijjwk1h45m53h4ia18b-nwh-drvtest-floating-two",
                "nwh-drvtest-floating-two",
                "out",
                &output("sha256"),
                &file(d, "two", "hello\n"),
                &none,
            )
            .unwrap();
            check_floating(
                "/nix/store/bl7fi9zncaj97npszi6iy2aciwg9x1yl-nwh-drvtest-floating-two-dev",
                "nwh-drvtest-floating-two",
                "dev",
                &output("sha256"),
                &file(d, "two-dev", "dev\n"),
                &none,
            )
            .unwrap();
            // `echo ${./src.txt} > $out`: a reference to another path (Nix 2.8).
            check_floating(
                "/nix/store/ixz1hn3d4p5sbxxywby6syg29b790n7a-nwh-drvtest-floating-refs",
                "nwh-drvtest-floating-refs",
                "out",
                &output("r:sha256"),
                &file(d, "refs", &format!("{SRC}\n")),
                &refs(&[SRC]),
            )
            .unwrap();
            // `echo sha1 > $out`, recursive sha1 (Nix 2.8 and 2.34 alike).
            check_floating(
                "/nix/store/vikmdvvymw6h450hgh7530cf3k98mqpg-nwh-drvtest-floating-sha1",
                "nwh-drvtest-floating-sha1",
                "out",
                &output("r:sha1"),
                &file(d, "sha1", "sha1\n"),
                &none,
            )
            .unwrap();
            // The same derivation, referring to itself: Nix 2.8 and 2.34 give it different
            // paths (2.8 hashes the offsets of the self-references too); each is accepted.
            for out in [SELF_2_8, SELF_2_34] {
                let real = self_referring(d, out);
                check_floating(
                    out,
                    "nwh-drvtest-floating-self",
                    "out",
                    &output("r:sha256"),
                    &real,
                    &refs(&[out]),
                )
                .unwrap_or_else(|e| panic!("{out}: {e:#}"));
            }
        }

        #[test]
        fn any_other_path_is_refused() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let none = BTreeSet::new();
            let floating = "/nix/store/h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating";
            let check = |claimed: &str,
                         output_name: &str,
                         algo: &str,
                         real: &Path,
                         references: &BTreeSet<String>| {
                check_floating(claimed, "nwh-drvtest-floating", output_name, &output(algo), real, references)
                    .map_err(|e| format!("{e:#}"))
            };
            let real = file(d, "floating", "\n");
            // Other contents, another method, another output's name, references left out or
            // made up.
            let other = file(d, "other", "other\n");
            let err = check(floating, "out", "r:sha256", &other, &none).unwrap_err();
            assert!(err.contains("what it sent for it is /nix/store/"), "{err}");
            assert!(check(floating, "out", "sha256", &real, &none).is_err());
            let err = check(floating, "dev", "r:sha256", &real, &none).unwrap_err();
            assert!(err.contains("Nix names that output 'nwh-drvtest-floating-dev'"), "{err}");
            assert!(check(floating, "out", "r:sha256", &real, &refs(&[SRC])).is_err());
            let with_ref = file(d, "refs", &format!("{SRC}\n"));
            assert!(check_floating(
                "/nix/store/ixz1hn3d4p5sbxxywby6syg29b790n7a-nwh-drvtest-floating-refs",
                "nwh-drvtest-floating-refs",
                "out",
                &output("r:sha256"),
                &with_ref,
                &none,
            )
            .is_err());
            // What Nix 2.8 built, claimed at the path Nix 2.34 gave its own build, and the
            // other way round.
            let built_by_2_8 = self_referring(d, SELF_2_8);
            assert!(check_floating(
                SELF_2_34,
                "nwh-drvtest-floating-self",
                "out",
                &output("r:sha256"),
                &built_by_2_8,
                &refs(&[SELF_2_34])
            )
            .is_err());
            // A flat output must be a file; a text method is not one this hook knows.
            assert!(check(floating, "out", "sha256", d, &none).is_err());
            assert!(check(floating, "out", "text:sha256", &real, &none).is_err());
        }

        /// Relays the NAR of `real` as the output claimed at `claimed`: what got through, and
        /// whether the relay passed it whole.
        fn relayed(
            claimed: &str,
            drv_name: &str,
            algo: &str,
            real: &Path,
            references: &[&str],
        ) -> (bool, bool) {
            use std::io::Write;
            let mut nar = Vec::new();
            nwh_nar::dump::dump(real, &mut nar).unwrap();
            let claim =
                FloatingClaim::new(claimed, drv_name, "out", &output(algo), &refs(references)).unwrap();
            let mut sent = Vec::new();
            let mut relay = CheckedRelay::floating(&mut sent, claim).unwrap();
            for chunk in nar.chunks(5) {
                relay.write_all(chunk).unwrap();
            }
            let passed = relay.finish().is_ok();
            // Either all of it, or all but the last byte.
            let cut = if passed { nar.len() } else { nar.len() - 1 };
            (passed, sent == nar[..cut])
        }

        #[test]
        fn a_relayed_nar_passes_whole_only_with_the_contents_of_the_claimed_path() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let floating = "/nix/store/h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating";
            let flat = "/nix/store/nc4fd5yqjb4lfijjwk1h45m53h4ia18b-nwh-drvtest-floating-two";
            let name = "nwh-drvtest-floating";
            assert_eq!(relayed(floating, name, "r:sha256", &file(d, "a", "\n"), &[]), (true, true));
            assert_eq!(relayed(floating, name, "r:sha256", &file(d, "b", "other\n"), &[]), (false, true));
            assert_eq!(relayed(floating, name, "r:sha256", &file(d, "c", "\n"), &[SRC]), (false, true));
            let two = "nwh-drvtest-floating-two";
            assert_eq!(relayed(flat, two, "sha256", &file(d, "e", "hello\n"), &[]), (true, true));
            assert_eq!(relayed(flat, two, "r:sha256", &file(d, "f", "hello\n"), &[]), (false, true));
            // Flat, but a directory.
            let tree = d.join("tree");
            std::fs::create_dir(&tree).unwrap();
            file(&tree, "hello", "hello\n");
            assert_eq!(relayed(flat, two, "sha256", &tree, &[]), (false, true));
            // Self-references, hashed as the builder's release hashes them.
            let self_name = "nwh-drvtest-floating-self";
            let real = self_referring(d, SELF_2_8);
            assert_eq!(relayed(SELF_2_8, self_name, "r:sha256", &real, &[SELF_2_8]), (true, true));
            assert_eq!(relayed(SELF_2_34, self_name, "r:sha256", &real, &[SELF_2_34]), (false, true));
        }

        #[test]
        fn occurrences_split_across_writes_are_found_at_their_offsets() {
            use std::io::Write;
            let whole = {
                let mut h = ModuloHasher::new(Algo::Sha256, b"abcd");
                h.write_all(b"xxabcdyyabcdab").unwrap();
                h.finish()
            };
            let mut h = ModuloHasher::new(Algo::Sha256, b"abcd");
            for piece in [&b"xxa"[..], b"b", b"cdyya", b"bcdab"] {
                h.write_all(piece).unwrap();
            }
            let (modulo, with_offsets) = h.finish();
            assert_eq!((modulo.clone(), with_offsets.clone()), whole);
            assert_eq!(modulo, Sha256::digest(b"xx\0\0\0\0yy\0\0\0\0ab").to_vec());
            assert_eq!(with_offsets, Sha256::digest(b"xx\0\0\0\0yy\0\0\0\0ab|2|8").to_vec());
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
            let mut relay = CheckedRelay::fixed(&mut sent, &fixed(algo, &hash)).unwrap();
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
