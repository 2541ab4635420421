//! Builders found unreachable, remembered across hook processes (Nix starts one per build),
//! so that the next hooks do not wait for a dead builder again. One small file per builder in
//! the state directory; backoff grows with consecutive failures, as Hydra's does.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use nwh_files::private::{Access, PrivateDir};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First backoff; each further consecutive failure triples it, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

pub struct Health {
    dir: PathBuf,
    /// The directory, checked once; none when it cannot be used, and then nothing is
    /// remembered (every builder is tried), which costs time, never a build.
    opened: OnceLock<Option<PrivateDir>>,
}

/// What is known about a builder that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Down {
    pub failures: u32,
    pub since: u64,
    pub until: u64,
    pub reason: String,
}

/// In the hook's state directory, shared by every hook and `check`.
impl From<&nwh_options::Options> for Health {
    fn from(opts: &nwh_options::Options) -> Health {
        Health::new(opts.state_dir().join("down"))
    }
}

impl Health {
    pub fn new(dir: PathBuf) -> Health {
        Health { dir, opened: OnceLock::new() }
    }

    fn verified(&self) -> Option<&PrivateDir> {
        self.opened.get_or_init(|| crate::core::state_dir::subdir(&self.dir, Access::Readable).ok()).as_ref()
    }

    fn name(uri: &str) -> String {
        format!("{}.down", nwh_slots::escape_uri(uri))
    }

    /// The builder's failure record, if it is still within its backoff.
    pub fn down(&self, uri: &str) -> Option<Down> {
        let d = self.read(uri)?;
        (now() < d.until).then_some(d)
    }

    /// Why the hook will not use the builder now, in the words the hook reports; `None`
    /// when it may be tried.
    pub fn down_reason_of(&self, uri: &str) -> Option<String> {
        self.down(uri).map(|d| {
            format!("unreachable ({}); not tried again for {} s", d.reason, d.until.saturating_sub(d.since))
        })
    }

    fn read(&self, uri: &str) -> Option<Down> {
        let mut text = String::new();
        self.verified()?.open_own(&Health::name(uri)).ok()??.read_to_string(&mut text).ok()?;
        let mut lines = text.splitn(4, '\n');
        let failures = lines.next()?.parse().ok()?;
        let since = lines.next()?.parse().ok()?;
        let until = lines.next()?.parse().ok()?;
        Some(Down { failures, since, until, reason: lines.next().unwrap_or_default().trim_end().to_string() })
    }

    /// Records a failure; returns the new record.
    pub fn mark_down(&self, uri: &str, reason: &str) -> Down {
        let failures = self.read(uri).map_or(1, |d| d.failures.saturating_add(1));
        let backoff = FIRST_BACKOFF.saturating_mul(3u32.saturating_pow(failures - 1)).min(MAX_BACKOFF);
        let t = now();
        let d = Down { failures, since: t, until: t + backoff.as_secs(), reason: reason.replace('\n', " ") };
        // Written whole and renamed, so a concurrent reader never sees half a record.
        if let Some(dir) = self.verified() {
            let record = format!("{}\n{}\n{}\n{}\n", d.failures, d.since, d.until, d.reason);
            let _ = dir.write_atomically(&Health::name(uri), record.as_bytes());
        }
        d
    }

    pub fn mark_up(&self, uri: &str) {
        if let Some(dir) = self.verified() {
            let _ = dir.remove(&Health::name(uri));
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory as the hook makes one: its own, closed to others.
    fn private_tempdir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn backoff_grows_and_success_forgets() {
        let dir = private_tempdir();
        let h = Health::new(dir.path().join("down"));
        assert!(h.down("ssh://a").is_none());
        let d1 = h.mark_down("ssh://a", "Connection refused");
        assert_eq!(d1.failures, 1);
        assert_eq!(d1.until - d1.since, 15);
        let d2 = h.mark_down("ssh://a", "Connection refused");
        assert_eq!((d2.failures, d2.until - d2.since), (2, 45));
        assert_eq!(h.down("ssh://a").unwrap().reason, "Connection refused");
        assert!(h.down("ssh://b").is_none(), "per builder");
        h.mark_up("ssh://a");
        assert!(h.down("ssh://a").is_none());
    }

    #[test]
    fn backoff_is_capped() {
        let dir = private_tempdir();
        let h = Health::new(dir.path().join("down"));
        let mut d = h.mark_down("ssh://a", "x");
        for _ in 0..20 {
            d = h.mark_down("ssh://a", "x");
        }
        assert_eq!(d.until - d.since, MAX_BACKOFF.as_secs());
    }
}
