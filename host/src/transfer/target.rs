//! Where and how to reach a builder, from its machines line: the store URI's scheme (which
//! protocol), user, host, port, key, host key and store parameters, checked once, before any
//! connection is tried.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nwh_machines::Machine;

use super::local_store::LocalStore;
use sha2::{Digest, Sha256};

/// Where to reach a builder, from its store URI and machines line.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Which protocol the builder's store program speaks: the URI's scheme.
    pub protocol: Protocol,
    /// Where the store program runs: on `host` through ssh, or here, as a child of the hook.
    pub via: Via,
    pub user: Option<String>,
    /// The host ssh is given; for a target that runs here, the store URI as messages name it.
    pub host: String,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    /// The decoded host-key line (`ssh-ed25519 AAAA…`) from the machines file.
    pub host_key: Option<String>,
    /// `remote-program` from the URI's query; default `nix-store` (`ssh://`) or `nix-daemon`
    /// (`ssh-ng://`).
    pub remote_program: String,
    /// `remote-store` from the URI's query, passed as `--store`; for a local store (a path,
    /// `local`, `unix://…`), that store's URI with what Nix adds to it.
    pub remote_store: Option<String>,
    /// `compress=true`: ssh compresses the connection (`-C`).
    pub compress: bool,
}

/// The two store protocols a builder can be reached with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `ssh://`: Nix's serve protocol, `nix-store --serve --write`.
    Serve,
    /// `ssh-ng://`: Nix's worker protocol, `nix-daemon --stdio`.
    Daemon,
}

/// Where a builder's store program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// On the builder, through its SSH master.
    Ssh,
    /// On this machine, as a child of the hook, without ssh: what Nix does for an `ssh://` or
    /// `ssh-ng://` URI whose authority is exactly `localhost`, and, in its own process, for a
    /// local store (a path, `local`, `daemon`, `auto`, `unix://…`).
    Here,
}

/// Store-URI parameters Nix takes that change nothing for a hook, which opens one connection
/// per build and has its own log and cache: accepted, so that a line written for Nix works.
const INERT_PARAMETERS: &[&str] = &[
    "max-connections",
    "max-connection-age",
    "log-fd",
    "path-info-cache-size",
    "priority",
    "want-mass-query",
    "trusted",
];

/// Why the hook cannot build on a machine at all, whatever its state: a store URI it does
/// not speak, a store-URI parameter it does not know, a line that would hand the build back
/// to nix-wasm-hook, or a store that is the master's own (`master`, the one Nix's `store`
/// setting names). Such a machine is shown to the policy as disabled, with
/// this reason, instead of being chosen and then failing.
pub fn unsupported(m: &Machine, conn: &LocalStore) -> Option<String> {
    if m.builder_mode_program().is_some() {
        return Some(BUILDER_MODE_LINE.to_string());
    }
    match Target::from_machine(m) {
        Err(e) => Some(format!("{e:#}")),
        Ok(t) => t.on_master_store(conn),
    }
}

/// Why a builder-mode line is never chosen by nix-wasm-hook itself.
pub const BUILDER_MODE_LINE: &str =
    "this line makes nix-wasm-hook a builder of Nix's own hook (builder mode), \
    and nix-wasm-hook never sends a build to itself: it dispatches to the real builders, which \
    `builders` lists when it is the build hook, and its `machines` option in builder mode";

/// A store URI that names a store on this machine, opened by Nix in its own process: an
/// absolute path, `local`, `daemon`, `auto` (each possibly with parameters), a bare query
/// (`?root=…`, the `auto` store), `unix://…`.
pub fn is_local_store(uri: &str) -> bool {
    let (base, _) = nwh_machines::store_uri::split_query(uri);
    base.starts_with('/') || matches!(base, "" | "local" | "daemon" | "auto") || base.starts_with("unix://")
}

impl Target {
    pub fn from_machine(m: &Machine) -> Result<Target> {
        let uri = &m.uri;
        if is_local_store(uri) {
            return Target::local_store(m);
        }
        let (protocol, rest, program) = if let Some(rest) = uri.strip_prefix("ssh://") {
            (Protocol::Serve, rest, "nix-store")
        } else if let Some(rest) = uri.strip_prefix("ssh-ng://") {
            (Protocol::Daemon, rest, "nix-daemon")
        } else if let Some((scheme, _)) = uri.split_once("://") {
            bail!(
                "`{scheme}://` is not a store this hook can build on: write ssh:// or ssh-ng://, or a local \
                 store (an absolute path, local, daemon, auto, unix://)"
            );
        } else {
            let (base, _) = nwh_machines::store_uri::split_query(uri);
            bail!(
                "`{base}` is a relative path, which Nix's hook would take from `/`, where it runs: write \
                 the store's absolute path"
            );
        };
        let (authority, query) = nwh_machines::store_uri::split_query(rest);
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = split_port(hostport)?;
        if host.is_empty() || host.starts_with('-') {
            bail!("{uri}: '{host}' is not a host name ssh can be given");
        }
        // Nix fakes ssh for exactly `localhost`: no user, no port (`SSHMaster`'s `fakeSSH`).
        let via = if authority == "localhost" { Via::Here } else { Via::Ssh };
        let mut t = Target {
            protocol,
            via,
            user,
            host: host.to_string(),
            port,
            key: m.ssh_key.clone(),
            host_key: m.host_key.as_ref().map(|k| k.line.clone()),
            remote_program: program.into(),
            remote_store: None,
            compress: false,
        };
        let params = nwh_machines::store_uri::query_params(query).map_err(|e| anyhow!("{uri}: {e}"))?;
        for (name, value) in params {
            match name.as_str() {
                "remote-program" => t.remote_program = value,
                "remote-store" => t.remote_store = Some(value),
                // As in Nix, the machines line's own columns win over the URI's parameters.
                "ssh-key" if t.key.is_none() => {
                    anyhow::ensure!(
                        Path::new(&value).is_absolute(),
                        "{uri}: ssh-key={value} is a relative path, which ssh would look for from `/`: \
                         give an absolute path"
                    );
                    t.key = Some(value.into());
                }
                "base64-ssh-public-host-key" if t.host_key.is_none() => {
                    let key = nwh_machines::HostKey::from_base64(&value)
                        .map_err(|e| anyhow!("{uri}: base64-ssh-public-host-key: {e}"))?;
                    t.host_key = Some(key.line);
                }
                "ssh-key" | "base64-ssh-public-host-key" => {}
                "compress" => t.compress = value == "true",
                name if INERT_PARAMETERS.contains(&name) => {}
                name => bail!(
                    "{uri}: the store parameter `{name}` is not one this hook knows (it takes remote-program, \
                     remote-store, ssh-key, base64-ssh-public-host-key, compress, and ignores {}): remove it",
                    INERT_PARAMETERS.join(", ")
                ),
            }
        }
        Ok(t)
    }

    /// A local store as a builder: Nix's hook opens it in its own process, with the line's
    /// features added to its `system-features` parameter (`Machine::completeStoreReference` in
    /// Nix 2.34: appended, space-separated, to the URI's own, supported then mandatory ones;
    /// the parameter is set even when both are empty). Here Nix's own store program runs as a
    /// child, `nix-store --serve --write --store <that URI>`, every parameter of the URI passed
    /// on to it (they are that store's settings), escaped again so that it decodes them alike.
    fn local_store(m: &Machine) -> Result<Target> {
        let uri = &m.uri;
        let (base, query) = nwh_machines::store_uri::split_query(uri);
        let mut params = nwh_machines::store_uri::query_params(query).map_err(|e| anyhow!("{uri}: {e}"))?;
        let mut features: Vec<String> = match params.iter().position(|(n, _)| n == "system-features") {
            Some(i) => vec![params.remove(i).1],
            None => Vec::new(),
        };
        features.retain(|f| !f.is_empty());
        features.extend(m.supported_features.iter().chain(&m.mandatory_features).cloned());
        let features = features.join(" ");
        params.push(("system-features".into(), features));
        let query =
            nwh_machines::store_uri::encode_query(params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        Ok(Target {
            protocol: Protocol::Serve,
            via: Via::Here,
            user: None,
            host: base.to_string(),
            port: None,
            key: None,
            host_key: None,
            remote_program: "nix-store".into(),
            remote_store: Some(format!("{base}?{query}")),
            compress: false,
        })
    }

    /// A local store (a path, `local`, `daemon`, `auto`, `unix://…`), whose store program runs
    /// here: Nix opens it in its own process.
    pub fn is_local_store(&self) -> bool {
        self.via == Via::Here && self.host != "localhost"
    }

    /// Why this target cannot be built on when the master's store is `master`: its store
    /// program would open the very store whose output locks Nix holds while its hook runs, and
    /// wait on them for ever (Nix's own hook hangs there too, NixOS/nix#2029). Two stores are
    /// the same when their store directories are the same place on disk
    /// ([`LocalStore::same_as`]).
    pub fn on_master_store(&self, conn: &LocalStore) -> Option<String> {
        if self.via != Via::Here {
            return None;
        }
        let ours = LocalStore::parse(self.remote_store.as_deref().unwrap_or("auto")).ok()?;
        if !ours.same_as(conn) {
            return None;
        }
        Some(format!(
            "it builds in the store Nix itself uses here ({}), whose output locks Nix holds while its hook \
             runs: the build would wait on them for ever (NixOS/nix#2029); remove the line and raise \
             max-jobs to build locally, or give it another store (?remote-store=/path for ssh://localhost, \
             or a store path as the URI)",
            conn.uri.as_deref().unwrap_or("auto")
        ))
    }

    /// The arguments of the builder's store program: the serve protocol (read-only unless
    /// `write`) or the daemon's on stdin/stdout, on the `remote-store` when one is named.
    pub fn store_args(&self, write: bool) -> Vec<&str> {
        let mut args = match self.protocol {
            Protocol::Serve if write => vec!["--serve", "--write"],
            Protocol::Serve => vec!["--serve"],
            Protocol::Daemon => vec!["--stdio"],
        };
        if let Some(store) = &self.remote_store {
            args.extend(["--store", store.as_str()]);
        }
        args
    }

    /// What `known_hosts` calls this host.
    pub(super) fn known_hosts_name(&self) -> String {
        match self.port {
            Some(p) if p != 22 => format!("[{}]:{p}", self.host),
            _ => self.host.clone(),
        }
    }

    /// The control socket's name: everything that makes two connections differ.
    pub(super) fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.user.as_deref().unwrap_or(""),
            &self.host,
            &self.port.map(|p| p.to_string()).unwrap_or_default(),
            &self.key.as_ref().map(|k| k.display().to_string()).unwrap_or_default(),
            self.host_key.as_deref().unwrap_or(""),
            if self.compress { "compress" } else { "" },
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        nwh_nar::hash::base16_encode(&h.finalize()[..10])
    }

    pub fn display(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

fn split_port(hostport: &str) -> Result<(&str, Option<u16>)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| anyhow!("unclosed '[' in '{hostport}'"))?;
        return Ok((h, after.strip_prefix(':').map(str::parse).transpose()?));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            Ok((h, Some(p.parse().with_context(|| format!("port '{p}' in '{hostport}'"))?)))
        }
        _ => Ok((hostport, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(uri: &str) -> Machine {
        nwh_machines::parse_builders(uri, "t", &nwh_machines::ParseContext::new("x86_64-linux"))
            .machines
            .remove(0)
    }

    #[test]
    fn a_builder_mode_line_is_never_built_on() {
        let default = LocalStore::parse("auto").unwrap();
        let line = m("ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook");
        assert_eq!(unsupported(&line, &default).as_deref(), Some(BUILDER_MODE_LINE));
        let line = m("ssh-ng://localhost?remote-program=/usr/local/bin/nix%2Dwasm-hook&remote-store=/x");
        assert_eq!(unsupported(&line, &default).as_deref(), Some(BUILDER_MODE_LINE));
        assert_eq!(unsupported(&m("ssh://b1?remote-program=/usr/local/bin/nix-wasm-hook"), &default), None);
        assert_eq!(unsupported(&m("ssh-ng://b1"), &default), None);
        let why = unsupported(&m("ssh://b1?frobnicate=1"), &default).unwrap();
        assert!(why.contains("the store parameter `frobnicate` is not one this hook knows"), "{why}");
        let why = unsupported(&m("file:///srv/store"), &default).unwrap();
        assert!(why.starts_with("`file://` is not a store this hook can build on: write ssh://"), "{why}");
        let why = unsupported(&m("stores/b1?root=x"), &default).unwrap();
        assert!(why.starts_with("`stores/b1` is a relative path"), "{why}");
        let why = unsupported(&m("ssh://b1?remote-store=%zz"), &default).unwrap();
        assert!(why.contains("invalid URI parameter"), "{why}");
    }

    #[test]
    fn localhost_runs_here_anything_else_through_ssh() {
        let t = Target::from_machine(&m("ssh://localhost?remote-store=/tmp/b1")).unwrap();
        assert_eq!((t.via, t.protocol, t.remote_program.as_str()), (Via::Here, Protocol::Serve, "nix-store"));
        assert_eq!(t.store_args(true), ["--serve", "--write", "--store", "/tmp/b1"]);
        assert!(!t.is_local_store());
        let t = Target::from_machine(&m("ssh-ng://localhost?remote-store=/tmp/b1")).unwrap();
        assert_eq!(
            (t.via, t.protocol, t.remote_program.as_str()),
            (Via::Here, Protocol::Daemon, "nix-daemon")
        );
        for uri in ["ssh://root@localhost", "ssh://localhost:22", "ssh-ng://nix@localhost", "ssh://127.0.0.1"]
        {
            assert_eq!(Target::from_machine(&m(uri)).unwrap().via, Via::Ssh, "{uri}");
        }
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let t = Target::from_machine(&m(
            "ssh://localhost?remote-store=/x%3Fsystem-features=foo%20bar&remote%2Dprogram=/opt/nix%2Dstore",
        ))
        .unwrap();
        assert_eq!(t.remote_store.as_deref(), Some("/x?system-features=foo bar"));
        assert_eq!(t.remote_program, "/opt/nix-store");
        assert_eq!(t.store_args(true), ["--serve", "--write", "--store", "/x?system-features=foo bar"]);
        let t = Target::from_machine(&m("ssh://b1?ssh-key=/k%20ey&compress=tru%65")).unwrap();
        assert_eq!((t.key.as_deref(), t.compress), (Some(Path::new("/k ey")), true));
    }

    #[test]
    fn local_stores_run_nix_store_here_with_the_line_features() {
        let t = Target::from_machine(&m("/tmp/x/machine2 x86_64-linux - 1 1 bar,foo baz")).unwrap();
        assert_eq!((t.via, t.protocol, t.remote_program.as_str()), (Via::Here, Protocol::Serve, "nix-store"));
        assert!(t.is_local_store());
        assert_eq!(t.display(), "/tmp/x/machine2");
        // Supported then mandatory, space-separated, appended to the URI's own (Nix 2.34).
        assert_eq!(t.remote_store.as_deref(), Some("/tmp/x/machine2?system-features=bar%20foo%20baz"));
        let t = Target::from_machine(&m("local?root=/tmp/r%20s&system-features=kvm x86_64-linux - 1 1 big"))
            .unwrap();
        assert_eq!(t.remote_store.as_deref(), Some("local?root=/tmp/r%20s&system-features=kvm%20big"));
        // Set, empty, when neither says any, as Nix sets it.
        let t = Target::from_machine(&m("unix:///run/other-daemon")).unwrap();
        assert_eq!(t.remote_store.as_deref(), Some("unix:///run/other-daemon?system-features="));
        for uri in ["daemon", "auto", "local", "?root=/r"] {
            assert!(Target::from_machine(&m(uri)).unwrap().is_local_store(), "{uri}");
        }
    }

    #[test]
    fn a_builder_in_the_master_store_is_declined() {
        let store = |uri: Option<&str>| LocalStore::parse(uri.unwrap_or("auto")).unwrap();
        let declined = |uri: &str, conn: Option<&str>| unsupported(&m(uri), &store(conn)).is_some();
        for uri in ["ssh://localhost", "ssh-ng://localhost", "auto", "local", "daemon", "?system-features=x"]
        {
            assert!(declined(uri, None), "{uri}");
            assert!(declined(uri, Some("daemon")), "{uri}");
            assert!(declined(uri, Some("local")), "{uri}");
            assert!(!declined(uri, Some("/tmp/m")), "{uri}");
        }
        assert!(declined("ssh://localhost?remote-store=local", None));
        assert!(declined("unix:///nix/var/nix/daemon-socket/socket", None));
        assert!(declined("local?root=/", None));
        assert!(declined("/tmp/m", Some("/tmp/m/")));
        assert!(declined("/tmp/m", Some("local?root=/tmp/m")));
        assert!(declined("ssh://localhost?remote-store=/tmp/m%3Fsystem-features=x", Some("/tmp/m")));
        assert!(!declined("/tmp/b", None));
        assert!(!declined("/tmp/b", Some("/tmp/m")));
        assert!(!declined("local?root=/tmp/b", None));
        assert!(!declined("ssh://localhost?remote-store=/tmp/b", None));
        assert!(!declined("unix:///run/other", None));
        // Through ssh, even to this machine, it is the other side's store.
        assert!(!declined("ssh://127.0.0.1", None));
        // Nix 2.34 names a path given as `--store` so.
        assert!(declined("/tmp/m", Some("local:///tmp/m")));
        let why = unsupported(&m("/tmp/m"), &store(Some("/tmp/m"))).unwrap();
        assert!(
            why.contains("the store Nix itself uses here (/tmp/m)") && why.contains("NixOS/nix#2029"),
            "{why}"
        );
    }

    #[test]
    fn targets_from_uris() {
        let t = Target::from_machine(&m("ssh://nix@b1:2222?remote-program=/opt/nix-store")).unwrap();
        assert_eq!((t.user.as_deref(), t.host.as_str(), t.port), (Some("nix"), "b1", Some(2222)));
        assert_eq!(t.remote_program, "/opt/nix-store");
        let t = Target::from_machine(&m("ssh://[::1]:22")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        let t =
            Target::from_machine(&m("ssh-ng://b1?remote-store=/srv/store&compress=true&max-connections=4"))
                .unwrap();
        assert_eq!((t.protocol, t.remote_program.as_str()), (Protocol::Daemon, "nix-daemon"));
        assert_eq!((t.remote_store.as_deref(), t.compress), (Some("/srv/store"), true));
        // The line's own columns win over the URI's parameters, as in Nix.
        let t = Target::from_machine(&m("ssh://b1?ssh-key=/uri-key x86_64-linux /column-key")).unwrap();
        assert_eq!(t.key.as_deref(), Some(Path::new("/column-key")));
        let t = Target::from_machine(&m("ssh://b1?ssh-key=/uri-key")).unwrap();
        assert_eq!(t.key.as_deref(), Some(Path::new("/uri-key")));
        assert!(Target::from_machine(&m("ssh://b1?ssh-key=relative")).is_err());
        // base64 of "ssh-ed25519 AAAA", a key line.
        let t =
            Target::from_machine(&m("ssh://b1?base64-ssh-public-host-key=c3NoLWVkMjU1MTkgQUFBQQ==")).unwrap();
        assert_eq!(t.host_key.as_deref(), Some("ssh-ed25519 AAAA"));
        assert!(Target::from_machine(&m("ssh://b1?base64-ssh-public-host-key=bm9wZQ==")).is_err());
    }
}
