//! The test bed's hostile builder (testbed/hostile-builder): a real builder's store behind a
//! relay that changes one answer. Its machines line names the relay as the builder's
//! `remote-program`, through a script in a directory that the builders see (they share the
//! host's file system but for `/nix`, `/etc/nix`, `/tmp` and `/root`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::testbed::Testbed;

pub struct Hostile {
    dir: tempfile::TempDir,
    relay: PathBuf,
}

impl Hostile {
    pub fn new() -> Hostile {
        let dir = tempfile::Builder::new().prefix("nwh-hostile-").tempdir_in("/var/tmp").unwrap();
        let relay = dir.path().join("nwh-hostile-builder");
        std::fs::copy(relay_binary(), &relay).unwrap();
        Hostile { dir, relay }
    }

    /// The machines line of builder `i` with the relay and `attack` (its name and value) in
    /// front of its store.
    pub fn line(&self, tb: &Testbed, i: usize, attack: &[&str]) -> String {
        let script = self.dir.path().join(format!("{}.sh", attack.join("-").replace('/', "_")));
        let quoted: Vec<String> = attack.iter().map(|a| format!("'{a}'")).collect();
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec {} {} -- \"$@\"\n", self.relay.display(), quoted.join(" ")),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let line = tb.machine(i);
        let (uri, rest) = line.split_once(' ').unwrap();
        format!("{uri}?remote-program={} {rest}", script.display())
    }
}

/// The relay, built once per test process (it is no part of the product, so `cargo test`
/// does not build it by itself).
fn relay_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--quiet", "-p", "nwh-hostile-builder", "--manifest-path"])
                .arg(root.join("Cargo.toml"))
                .output()
                .expect("cannot run cargo");
            assert!(
                out.status.success(),
                "building the hostile builder: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The test binary is <target>/debug/deps/integration-…: the relay is in <target>/debug.
            let exe = std::env::current_exe().unwrap();
            let relay = exe.parent().unwrap().parent().unwrap().join("nwh-hostile-builder");
            assert!(relay.is_file(), "no {}", relay.display());
            relay
        })
        .clone()
}
