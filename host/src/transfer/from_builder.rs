//! What a builder says, checked before anything is done with it. A builder is trusted for the
//! contents of the outputs it was asked to build, as Nix trusts it, and for nothing else
//! (docs/security.md): every path it names must be a store path of this store and one that
//! was asked about, and a NAR may not run past the size it announced for it.

use std::collections::BTreeSet;
use std::io::{self, Write};

use anyhow::{ensure, Context, Result};
use nwh_serve::PathInfo;
use nwh_store_path::StoreDir;

/// Keeps the path infos a builder returned for `asked` after checking every path in them: the
/// path itself was asked about (once), and it, its references and its deriver are store paths
/// of `store`. The first bad one refuses the whole answer, naming the builder.
pub fn path_infos(
    store: &StoreDir,
    builder: &str,
    asked: &BTreeSet<String>,
    infos: Vec<(String, PathInfo)>,
) -> Result<Vec<(String, PathInfo)>> {
    let mut seen = BTreeSet::new();
    for (path, info) in &infos {
        ensure!(
            asked.contains(path) && seen.insert(path),
            "'{builder}' sent the path info of {path:?}, which it was not asked for"
        );
        let named = || format!("'{builder}' sent a path info of {path:?} that is not of this store");
        store.check(path).with_context(named)?;
        store.check_all(&info.references).with_context(named)?;
        store.check_all(&info.deriver).with_context(named)?;
    }
    Ok(infos)
}

/// The paths a builder says are valid, which must be among those `asked` about.
pub fn valid_paths(
    builder: &str,
    asked: &BTreeSet<String>,
    valid: BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    if let Some(path) = valid.difference(asked).next() {
        anyhow::bail!("'{builder}' said {path:?} is valid, which it was not asked about");
    }
    Ok(valid)
}

/// A sink that takes at most the `announced` size of one path's NAR: the bytes past it are
/// refused before they reach the sink (and so the disk), with an error that names the builder.
pub struct Bounded<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    left: u64,
    announced: u64,
    what: &'a str,
}

impl<'a, W: Write + ?Sized> Bounded<'a, W> {
    /// `what` names the path and the builder in the error.
    pub fn new(inner: &'a mut W, announced: u64, what: &'a str) -> Bounded<'a, W> {
        Bounded { inner, left: announced, announced, what }
    }
}

impl<W: Write + ?Sized> Write for Bounded<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(format!(
                "{} goes on past the {} bytes announced for it: refused there",
                self.what, self.announced
            )));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out";
    const DEP: &str = "/nix/store/1c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-dep";

    fn store() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn info(references: &[&str], deriver: Option<&str>) -> PathInfo {
        PathInfo {
            references: references.iter().map(|r| r.to_string()).collect(),
            deriver: deriver.map(str::to_string),
            ..PathInfo::default()
        }
    }

    fn check(infos: Vec<(&str, PathInfo)>) -> Result<Vec<(String, PathInfo)>> {
        let asked = BTreeSet::from([OUT.to_string()]);
        let infos = infos.into_iter().map(|(p, i)| (p.to_string(), i)).collect();
        path_infos(&store(), "ssh://b1", &asked, infos)
    }

    #[test]
    fn an_honest_answer_passes() {
        assert_eq!(check(vec![(OUT, info(&[OUT, DEP], Some(DEP)))]).unwrap().len(), 1);
        assert!(check(vec![]).unwrap().is_empty());
    }

    #[test]
    fn what_was_not_asked_is_refused() {
        for (extra, why) in [
            (DEP, "not asked for"),
            ("/root/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x", "not asked for"),
            (OUT, "not asked for"),
        ] {
            let err = check(vec![(OUT, info(&[], None)), (extra, info(&[], None))]).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
            assert!(format!("{err:#}").contains("'ssh://b1'"), "the builder is named: {err:#}");
        }
    }

    #[test]
    fn references_and_derivers_are_store_paths() {
        let newline = format!("{DEP}\n{}\n1", "0".repeat(64));
        for bad in [info(&[&newline], None), info(&["/etc/passwd"], None), info(&[], Some("/tmp/x.drv"))] {
            let err = format!("{:#}", check(vec![(OUT, bad)]).unwrap_err());
            assert!(err.contains("not of this store"), "{err}");
        }
    }

    #[test]
    fn valid_paths_are_among_those_asked() {
        let asked = BTreeSet::from([OUT.to_string()]);
        assert!(valid_paths("b", &asked, asked.clone()).is_ok());
        assert!(valid_paths("b", &asked, BTreeSet::from([DEP.to_string()])).is_err());
    }

    #[test]
    fn a_nar_is_cut_off_at_its_announced_size() {
        let mut sink = Vec::new();
        let mut bounded = Bounded::new(&mut sink, 5, "the NAR of x from b");
        bounded.write_all(b"abc").unwrap();
        bounded.write_all(b"de").unwrap();
        let err = bounded.write_all(b"f").unwrap_err();
        assert!(err.to_string().contains("past the 5 bytes"), "{err}");
        assert_eq!(sink, b"abcde", "nothing past the announcement reached the sink");
    }
}
