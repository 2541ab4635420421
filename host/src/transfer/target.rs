//! Where and how to reach a builder, from its machines line: the store URI's scheme (which
//! protocol), user, host, port, key, host key and store parameters, checked once, before any
//! connection is tried.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nwh_machines::Machine;
use sha2::{Digest, Sha256};

/// Where to reach a builder, from its store URI and machines line.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Which protocol the builder's store program speaks: the URI's scheme.
    pub protocol: Protocol,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    /// The decoded host-key line (`ssh-ed25519 AAAA…`) from the machines file.
    pub host_key: Option<String>,
    /// `remote-program` from the URI's query; default `nix-store` (`ssh://`) or `nix-daemon`
    /// (`ssh-ng://`).
    pub remote_program: String,
    /// `remote-store` from the URI's query, passed as `--store`.
    pub remote_store: Option<String>,
    /// `compress=true`: ssh compresses the connection (`-C`).
    pub compress: bool,
}

/// The two store protocols a builder can be reached with over SSH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `ssh://`: Nix's serve protocol, `nix-store --serve --write`.
    Serve,
    /// `ssh-ng://`: Nix's worker protocol, `nix-daemon --stdio`.
    Daemon,
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
/// not speak, a store-URI parameter it does not know, or a line that would hand the build back
/// to nix-wasm-hook. Such a machine is shown to the policy as disabled, with this reason,
/// instead of being chosen and then failing.
pub fn unsupported(m: &Machine) -> Option<String> {
    if m.builder_mode_program().is_some() {
        return Some(BUILDER_MODE_LINE.to_string());
    }
    Target::from_machine(m).err().map(|e| format!("{e:#}"))
}

/// Why a builder-mode line is never chosen by nix-wasm-hook itself.
pub const BUILDER_MODE_LINE: &str =
    "this line makes nix-wasm-hook a builder of Nix's own hook (builder mode), \
    and nix-wasm-hook never sends a build to itself: it dispatches to the real builders, which \
    `builders` lists when it is the build hook, and its `machines` option in builder mode";

impl Target {
    pub fn from_machine(m: &Machine) -> Result<Target> {
        let uri = &m.uri;
        let (protocol, rest, program) = if let Some(rest) = uri.strip_prefix("ssh://") {
            (Protocol::Serve, rest, "nix-store")
        } else if let Some(rest) = uri.strip_prefix("ssh-ng://") {
            (Protocol::Daemon, rest, "nix-daemon")
        } else {
            let scheme = uri.split_once("://").map_or(uri.as_str(), |(s, _)| s);
            bail!("`{scheme}://` is not a store this hook can build on: write ssh:// or ssh-ng://");
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = split_port(hostport)?;
        if host.is_empty() || host.starts_with('-') {
            bail!("{uri}: '{host}' is not a host name ssh can be given");
        }
        let mut t = Target {
            protocol,
            user,
            host: host.to_string(),
            port,
            key: m.ssh_key.clone(),
            host_key: m.host_key.as_ref().map(|k| k.line.clone()),
            remote_program: program.into(),
            remote_store: None,
            compress: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "remote-program" => t.remote_program = value.to_string(),
                "remote-store" => t.remote_store = Some(value.to_string()),
                // As in Nix, the machines line's own columns win over the URI's parameters.
                "ssh-key" if t.key.is_none() => {
                    anyhow::ensure!(
                        Path::new(value).is_absolute(),
                        "{uri}: ssh-key={value} is a relative path, which ssh would look for from `/`: \
                         give an absolute path"
                    );
                    t.key = Some(value.into());
                }
                "base64-ssh-public-host-key" if t.host_key.is_none() => {
                    let key = nwh_machines::HostKey::from_base64(value)
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
        h.finalize()[..10].iter().map(|b| format!("{b:02x}")).collect()
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
        let line = m("ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook");
        assert_eq!(unsupported(&line).as_deref(), Some(BUILDER_MODE_LINE));
        assert_eq!(unsupported(&m("ssh://b1?remote-program=/usr/local/bin/nix-wasm-hook")), None);
        assert_eq!(unsupported(&m("ssh-ng://b1")), None);
        let why = unsupported(&m("ssh://b1?frobnicate=1")).unwrap();
        assert!(why.contains("the store parameter `frobnicate` is not one this hook knows"), "{why}");
        assert!(
            unsupported(&m("file:///srv/store")).is_some_and(|why| why.contains("write ssh:// or ssh-ng://"))
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
