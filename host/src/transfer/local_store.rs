//! Which store is "local": the one Nix's `store` setting names, which Nix sends the hook with
//! its settings (and Nix's own hook opens). Usually `auto`, the machine's own `/nix/store`; with
//! `--store /some/root` (a chroot store, how users without root and Nix's own tests build) it is
//! a store whose `/nix/store` lives at `/some/root/nix/store` on disk, with its own database
//! and its own `current-load` directory.
//!
//! The hook reads the `.drv` there, checks validity and exports inputs there, and unpacks and
//! registers outputs there: every `nix-store` it runs gets `--store`, every path it opens on
//! disk is mapped to where the store really is ([`LocalStore::real`]).
//!
//! It is process-wide: a hook serves one parent, which has one store for the hook's whole life,
//! and the SIGTERM handler ([`crate::core::stop`]), which removes half-unpacked outputs, has no handle
//! to be given one. The front-end sets it ([`set`]) before the first build; until then (and in
//! the offline tools) it is the default store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use nwh_store_path::StoreDir;

/// The local store as the hook uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalStore {
    /// The `store` setting, passed on as `--store` to each `nix-store` the hook runs; none for
    /// the default store (`auto` or unset), so that nothing changes for the common case.
    pub uri: Option<String>,
    /// The store directory paths are named in (`/nix/store`).
    pub dir: StoreDir,
    /// Where that directory is on this machine's disk.
    pub real_dir: PathBuf,
    /// Nix's state directory of this store: its `current-load` holds the slot locks that Nix's
    /// own hook takes for a master of this store.
    pub state_dir: PathBuf,
}

static LOCAL: OnceLock<LocalStore> = OnceLock::new();

/// The socket of the machine's own daemon, which `daemon` and `auto` reach.
const DEFAULT_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// A store URI's part decoded as Nix decodes a query.
fn percent_decode(text: &str) -> Result<String> {
    nwh_machines::store_uri::percent_decode(text).map_err(|e| anyhow!("`{text}`: {e}"))
}

/// Makes `store` the local store of this process. Only the first call counts.
pub fn set(store: LocalStore) {
    let _ = LOCAL.set(store);
}

/// The local store of this process: the one [`set`], else the default store.
pub fn get() -> Result<&'static LocalStore> {
    if let Some(store) = LOCAL.get() {
        return Ok(store);
    }
    let default = LocalStore::parse("auto")?;
    Ok(LOCAL.get_or_init(|| default))
}

/// The store settings Nix's stores take that decide where the store is, and those that change
/// nothing for what the hook does with it (it never builds locally, never substitutes).
const PLACE_PARAMETERS: &[&str] = &["root", "state", "real", "store", "log"];

impl LocalStore {
    /// The local store a `store` setting names, by Nix's rules: `auto` (or empty), `local`,
    /// `daemon` and `unix://…` are the machine's own store; `local?root=R`, `local://R` and a
    /// bare absolute path `R` are the chroot store under `R`. A store the hook cannot register outputs in (a
    /// binary cache, a remote store) is an error that says so.
    pub fn parse(uri: &str) -> Result<LocalStore> {
        let uri = uri.trim();
        let (base, query) = nwh_machines::store_uri::split_query(uri);
        let params =
            nwh_machines::store_uri::query_params(query).map_err(|e| anyhow!("the store `{uri}`: {e}"))?;
        let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let root = match base {
            "" | "auto" | "daemon" | "local" => param("root").filter(|r| !r.is_empty()).map(PathBuf::from),
            b if b.starts_with("unix://") => None,
            b if b.starts_with('/') => Some(PathBuf::from(b)),
            // How Nix 2.34 renders a path given as `--store` (the path percent-encoded); a
            // `root` parameter, when there is one, wins, as in Nix.
            b if b.starts_with("local://") => match param("root") {
                Some(r) => Some(PathBuf::from(r)),
                None => Some(PathBuf::from(percent_decode(&b["local://".len()..])?)),
            },
            other => bail!(
                "the store `{other}` (Nix's `store` setting) is not one this hook can bring outputs back \
                 into: it unpacks them on this machine's disk, so the store must be local (`auto`, `local`, \
                 `daemon`, a path such as `/some/root`, or `local?root=/some/root`)"
            ),
        };
        if matches!(base, "daemon") || base.starts_with("unix://") {
            // The daemon's store is this machine's default one; the hook, as root in the
            // daemon, unpacks there as it does for `auto`.
            if params.iter().any(|(n, _)| PLACE_PARAMETERS.contains(&n.as_str())) {
                bail!("the store `{uri}`: a daemon's store cannot be given `root`, `state` or `real` here");
            }
        }
        let dir = match param("store") {
            Some(d) => StoreDir::new(d).with_context(|| format!("the store directory of `{uri}`"))?,
            None => StoreDir::from_env().context("reading the store directory (NIX_STORE_DIR)")?,
        };
        let under_root = |p: &Path| match &root {
            Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_path_buf(),
        };
        let real_dir =
            param("real").map(PathBuf::from).unwrap_or_else(|| under_root(Path::new(dir.as_str())));
        let state_dir =
            param("state").map(PathBuf::from).unwrap_or_else(|| under_root(&nwh_options::nix_state_dir()));
        for (what, path) in
            [("root", root.as_deref()), ("real", Some(&real_dir)), ("state", Some(&state_dir))]
        {
            if let Some(p) = path {
                anyhow::ensure!(
                    p.is_absolute(),
                    "the store `{uri}`: its {what} directory `{}` is relative; Nix resolves it against its \
                     own working directory, which the hook does not share: give an absolute path",
                    p.display()
                );
            }
        }
        let default = matches!(uri, "" | "auto");
        Ok(LocalStore { uri: (!default).then(|| uri.to_string()), dir, real_dir, state_dir })
    }

    /// Where store path `path` (named in [`Self::dir`]) is on disk. A path outside the store
    /// directory is returned as it is: callers check store paths before they touch them.
    pub fn real(&self, path: &str) -> PathBuf {
        match path.strip_prefix(self.dir.as_str()).filter(|rest| rest.starts_with('/')) {
            Some(rest) => self.real_dir.join(&rest[1..]),
            None => PathBuf::from(path),
        }
    }

    /// Whether `other` is this very store: the same store directory on disk, and not the store
    /// of another daemon (a `unix://` socket other than the machine's own), whose directory
    /// says nothing about where it is.
    pub fn same_as(&self, other: &LocalStore) -> bool {
        let other_daemon = |s: &LocalStore| {
            s.uri.as_deref().and_then(|u| u.strip_prefix("unix://")).is_some_and(|socket| {
                let socket = socket.split('?').next().unwrap_or(socket);
                Path::new(socket).components().ne(Path::new(DEFAULT_SOCKET).components())
            })
        };
        let place = |s: &LocalStore| s.real_dir.components().collect::<PathBuf>();
        !other_daemon(self) && !other_daemon(other) && place(self) == place(other)
    }

    /// Nix's own `nix-store`, on this store.
    pub fn nix_store(&self) -> Command {
        let mut c = Command::new("nix-store");
        if let Some(uri) = &self.uri {
            c.arg("--store").arg(uri);
        }
        c
    }

    /// Nix's own `nix-store` on the store itself, never through a daemon: registering validity
    /// is an operation of the local store that a daemon connection does not offer. The hook
    /// runs as the store's owner (root under the daemon), so it may; for a daemon's store that
    /// is this machine's own.
    pub fn nix_store_itself(&self) -> Command {
        let through_daemon = self.uri.as_deref().is_some_and(|u| u == "daemon" || u.starts_with("unix://"));
        let mut c = if through_daemon { Command::new("nix-store") } else { self.nix_store() };
        c.env_remove("NIX_REMOTE");
        c
    }

    /// Nix's own `nix-daemon` on the store itself, like [`Self::nix_store_itself`]: with
    /// `--stdio` it serves one connection in its own process, trusted, rather than forward it
    /// to a daemon (it does that for a store reached through one).
    pub fn nix_daemon_itself(&self) -> Command {
        let through_daemon = self.uri.as_deref().is_some_and(|u| u == "daemon" || u.starts_with("unix://"));
        let mut c = Command::new("nix-daemon");
        if let Some(uri) = self.uri.as_ref().filter(|_| !through_daemon) {
            c.arg("--store").arg(uri);
        }
        c.env_remove("NIX_REMOTE");
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(uri: &str) -> LocalStore {
        LocalStore::parse(uri).unwrap()
    }

    #[test]
    fn the_default_store_is_the_machines_own() {
        for uri in ["auto", "", " auto "] {
            let s = store(uri);
            assert_eq!(s.uri, None, "{uri:?}");
            assert_eq!(s.real("/nix/store/abc-x"), Path::new("/nix/store/abc-x"));
        }
        for uri in ["daemon", "unix:///nix/var/nix/daemon-socket/socket", "local"] {
            let s = store(uri);
            assert_eq!(s.uri.as_deref(), Some(uri));
            assert_eq!(s.real_dir, Path::new("/nix/store"), "{uri}");
        }
    }

    #[test]
    fn a_chroot_store_lives_under_its_root() {
        for uri in ["/tmp/m0", "local?root=/tmp/m0", "/tmp/m0?system-features=foo%20bar", "local:///tmp/m0"] {
            let s = store(uri);
            assert_eq!(s.uri.as_deref(), Some(uri));
            assert_eq!(s.real("/nix/store/abc-x.drv"), Path::new("/tmp/m0/nix/store/abc-x.drv"), "{uri}");
            assert_eq!(s.state_dir, Path::new("/tmp/m0/nix/var/nix"), "{uri}");
        }
        let s = store("local?root=/r&state=/s&real=/q");
        assert_eq!((s.real_dir.as_path(), s.state_dir.as_path()), (Path::new("/q"), Path::new("/s")));
        // Percent-decoded, as Nix decodes a query.
        assert_eq!(store("local?root=/tmp/a%20b").real_dir, Path::new("/tmp/a b/nix/store"));
        assert_eq!(store("local:///tmp/a%20b").real_dir, Path::new("/tmp/a b/nix/store"));
        // Only the store directory itself maps: not a path merely starting with its name.
        assert_eq!(store("/r").real("/nix/storex/y"), Path::new("/nix/storex/y"));
    }

    #[test]
    fn the_daemon_child_opens_the_store_itself() {
        let args = |uri: &str| {
            let c = store(uri).nix_daemon_itself();
            let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            let removes_remote = c.get_envs().any(|(k, v)| k == "NIX_REMOTE" && v.is_none());
            assert!(removes_remote, "{uri}");
            args
        };
        assert!(args("auto").is_empty());
        assert_eq!(args("/tmp/m0"), ["--store", "/tmp/m0"]);
        assert_eq!(args("local?root=/tmp/m0"), ["--store", "local?root=/tmp/m0"]);
        // Not forwarded to a daemon, whose experimental features are its own.
        assert!(args("daemon").is_empty());
        assert!(args("unix:///nix/var/nix/daemon-socket/socket").is_empty());
    }

    #[test]
    fn stores_the_hook_cannot_register_in_are_named() {
        for (uri, says) in [
            ("ssh://b1", "not one this hook can bring outputs back into"),
            ("file:///srv/cache", "not one this hook can bring outputs back into"),
            ("local?root=relative", "is relative"),
            ("daemon?root=/x", "a daemon's store cannot be given"),
            ("local?root=/x%2", "two hexadecimal digits"),
        ] {
            let e = format!("{:#}", LocalStore::parse(uri).unwrap_err());
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
