//! Which Nix the hook serves, and how that Nix words the end of a derivation that nothing can
//! build. Its words changed twice: Nix 2.30 replaced "a 'S' with features {…} is required"
//! with "Cannot build '…'", and Nix 2.34 replaced "unable to start any build" (max-jobs 0) with
//! "Cannot build '…'. Reason: local builds are disabled (max-jobs = 0)". The hook's warning
//! and `explain` quote the words the user is about to see next to their own explanation, so
//! the two read as one story.

use nwh_decision::{LocalMachine, Request};

/// How a range of Nix releases words a derivation that the hook declined and that it cannot
/// build itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wording {
    /// Nix up to 2.29, and Lix (forked from 2.18): "unable to start any build" when max-jobs
    /// is 0 (capitalised from 2.21 on), otherwise "a 'S' with features {F} is required to
    /// build 'D', but I am a 'S2' with features {F2}".
    Classic,
    /// Nix 2.30 to 2.33: "Unable to start any build" when max-jobs is 0, otherwise "Cannot
    /// build 'D'. Reason: required system or feature not available".
    CannotBuild,
    /// Nix 2.34 and later: "Cannot build 'D'." and a reason per cause, max-jobs 0 first
    /// ("local builds are disabled (max-jobs = 0)", "platform mismatch", "missing system
    /// features"); Nix then exits with 100, not 1.
    Reasons,
}

const WORDINGS: [Wording; 3] = [Wording::Classic, Wording::CannotBuild, Wording::Reasons];

/// Settings that a Nix release sends in its settings block and earlier releases do not, newest
/// first: the block itself says which wording its sender uses. Each is a plain setting of
/// libstore or libutil, so every process that runs builds (`nix-build`, `nix build`, the
/// daemon) registers and sends it whatever experimental features are on; Lix ≤ 2.93, which
/// sends only the settings a user overrode, knows neither. Not `external-builders`, which
/// 2.34 sends and 2.8 does not, because 2.32 and 2.33 send it too.
const MARKERS: &[(&str, Wording)] = &[
    // Added in NixOS/nix 6733f2e5 (February 2026), first released in 2.34.0.
    ("narinfo-cache-meta-ttl", Wording::Reasons),
    // First released in 2.30.0.
    ("json-log-path", Wording::CannotBuild),
];

impl Wording {
    /// The wording of Nix `major.minor`.
    pub fn of_nix(major: u32, minor: u32) -> Wording {
        match (major, minor) {
            (..2, _) | (2, ..30) => Wording::Classic,
            (2, ..34) => Wording::CannotBuild,
            _ => Wording::Reasons,
        }
    }

    /// The releases that word it so.
    fn releases(self) -> &'static str {
        match self {
            Wording::Classic => "Nix up to 2.29 (or Lix)",
            Wording::CannotBuild => "Nix 2.30 to 2.33",
            Wording::Reasons => "Nix 2.34 or later",
        }
    }

    /// The start of Nix's error for `req`, which no machine took and which `local` cannot
    /// build (the part that does not depend on the terminal, with the derivation's path);
    /// `None` when Nix can build it after all.
    pub fn nothing_can_build(self, req: &Request, local: &LocalMachine) -> Option<String> {
        let drv = if req.drv_path.starts_with('/') { req.drv_path.as_str() } else { "…" };
        // Nix's local build checks, which unlike the hook's "could build locally" let
        // `builtin` through.
        let platform_ok = req.system == "builtin"
            || req.system == local.system
            || local.extra_platforms.contains(&req.system);
        let features_ok = req.required_features.iter().all(|f| local.features.contains(f));
        let no_jobs = local.max_jobs == 0;
        if !no_jobs && platform_ok && features_ok {
            return None;
        }
        Some(match self {
            Wording::Classic if no_jobs => "unable to start any build".into(),
            Wording::CannotBuild if no_jobs => "Unable to start any build".into(),
            Wording::Classic => format!(
                "a '{}' with features {{{}}} is required to build '{drv}', but I am a '{}' with features {{{}}}",
                req.system,
                sorted(&req.required_features).join(", "),
                local.system,
                local.features.iter().cloned().collect::<Vec<_>>().join(", "),
            ),
            Wording::CannotBuild => {
                format!("Cannot build '{drv}'. Reason: required system or feature not available")
            }
            Wording::Reasons => {
                let reason = if no_jobs {
                    "local builds are disabled (max-jobs = 0)"
                } else if !platform_ok {
                    "platform mismatch"
                } else {
                    "missing system features"
                };
                format!("Cannot build '{drv}'. Reason: {reason}")
            }
        })
    }
}

fn sorted(words: &[String]) -> Vec<String> {
    let mut w = words.to_vec();
    w.sort();
    w.dedup();
    w
}

/// A setting first sent in Nix 2.15.0 (NixOS/nix e53e5c38d4), the release in which
/// `experimental-features` left libstore's settings for a group of its own
/// (`experimentalFeatureSettings`): from then on Nix's hook, which applies the block with
/// libstore's `settings.set`, no longer takes the parent's `experimental-features`, and knows
/// only those of its own `nix.conf` and `NIX_CONFIG`.
const EXPERIMENTS_APART: &str = "ssl-cert-file";

/// Nix 2.8 sends 91 settings, later releases more; Lix ≤ 2.93 sends only those a user
/// overrode, far fewer. A block this long without [`EXPERIMENTS_APART`] is Nix 2.8 to 2.14.
const WHOLE_BLOCK: usize = 60;

/// The Nix in use, as far as it can be told.
#[derive(Clone, Debug, PartialEq)]
pub struct NixRelease {
    /// As the user knows it: `Nix 2.34.8`, `Lix 2.93.0`, or the releases its settings block
    /// points to (`Nix 2.34 or later`).
    pub name: String,
    pub wording: Wording,
    /// Its own hook takes the parent's `experimental-features` from the settings block: Nix
    /// 2.8 to 2.14 (see [`EXPERIMENTS_APART`]). Later Nix and Lix take them from their own
    /// configuration only, so that `--extra-experimental-features ca-derivations` on the
    /// command line does not give their hook's local store the feature `ca-derivations`.
    pub experiments_from_block: bool,
}

impl NixRelease {
    /// The parent that sent this settings block (see [`MARKERS`]).
    pub fn from_block(block: &[(String, String)]) -> NixRelease {
        let wording = MARKERS
            .iter()
            .find(|(marker, _)| block.iter().any(|(name, _)| name == marker))
            .map_or(Wording::Classic, |&(_, w)| w);
        let experiments_from_block =
            block.len() >= WHOLE_BLOCK && !block.iter().any(|(name, _)| name == EXPERIMENTS_APART);
        NixRelease { name: wording.releases().into(), wording, experiments_from_block }
    }

    /// Its hook, on a failed remote build with `keep-failed`, says that the build directory was
    /// kept on the builder (Nix 2.30 and later, NixOS/nix 0712339912).
    pub fn tells_of_kept_failed_builds(&self) -> bool {
        self.wording >= Wording::CannotBuild
    }

    /// From what `nix-store --version` prints (`nix-store (Nix) 2.34.8`, `nix-store (Lix,
    /// like Nix) 2.93.0`), or a bare version (`2.34.8`, `lix 2.93`).
    pub fn from_version(text: &str) -> Option<NixRelease> {
        let version = text.split_whitespace().last()?;
        let mut numbers = version.split('.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let (Some(Some(major)), Some(Some(minor))) = (numbers.next(), numbers.next()) else {
            return None;
        };
        // Lix numbers its releases 2.90 and up but words this as Nix 2.18 did.
        let lix = text.to_ascii_lowercase().contains("lix");
        Some(if lix {
            NixRelease {
                name: format!("Lix {version}"),
                wording: Wording::Classic,
                experiments_from_block: false,
            }
        } else {
            NixRelease {
                name: format!("Nix {version}"),
                wording: Wording::of_nix(major, minor),
                experiments_from_block: (major, minor) < (2, 15),
            }
        })
    }

    /// The Nix on `PATH`, by `nix-store --version` (every release has it, and it needs no
    /// store or daemon); `None` when there is none or it answers something else. Under the
    /// daemon the daemon's Nix builds, usually the same package.
    pub fn installed() -> Option<NixRelease> {
        let out = std::process::Command::new("nix-store")
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        NixRelease::from_version(&String::from_utf8_lossy(&out.stdout))
    }
}

/// What Nix does with `req` once no machine took it and `local` cannot build it, in Nix's
/// words: `Nix 2.8.0 fails with "…"`; when the release is not known, every wording with the
/// releases that use it. `None` when Nix can build it after all.
pub fn nix_fails_with(nix: Option<&NixRelease>, req: &Request, local: &LocalMachine) -> Option<String> {
    if let Some(n) = nix {
        let quote = n.wording.nothing_can_build(req, local)?;
        return Some(format!("{} fails with \"{quote}\"", n.name));
    }
    // Consecutive wordings that say the same (up to case) are named once, for their releases.
    let mut groups: Vec<(Wording, Wording, String)> = Vec::new();
    for w in WORDINGS {
        let quote = w.nothing_can_build(req, local)?;
        match groups.last_mut() {
            Some((_, last, q)) if q.eq_ignore_ascii_case(&quote) => *last = w,
            _ => groups.push((w, w, quote)),
        }
    }
    let named: Vec<String> = groups
        .iter()
        .map(|(first, last, q)| format!("\"{q}\" ({})", releases_from_to(*first, *last)))
        .collect();
    Some(format!("Nix fails with {}", named.join(" or ")))
}

fn releases_from_to(first: Wording, last: Wording) -> String {
    let start = match first {
        Wording::Classic => None,
        Wording::CannotBuild => Some("2.30"),
        Wording::Reasons => Some("2.34"),
    };
    let end = match last {
        Wording::Classic => Some("2.29"),
        Wording::CannotBuild => Some("2.33"),
        Wording::Reasons => None,
    };
    match (start, end) {
        (None, Some(end)) => format!("Nix up to {end}, and Lix"),
        (Some(start), Some(end)) => format!("Nix {start} to {end}"),
        (Some(start), None) => format!("Nix {start} and later"),
        (None, None) => "every Nix".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(max_jobs: u32) -> LocalMachine {
        LocalMachine {
            max_jobs,
            system: "x86_64-linux".into(),
            extra_platforms: vec!["i686-linux".into()],
            features: ["benchmark", "kvm"].map(String::from).into(),
        }
    }

    fn request(system: &str, features: &[&str]) -> Request {
        Request {
            drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
            system: system.into(),
            required_features: features.iter().map(|f| f.to_string()).collect(),
            am_willing: false,
            could_build_locally: false,
            local: Default::default(),
        }
    }

    fn block(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), String::new())).collect()
    }

    #[test]
    fn the_settings_block_tells_the_wording() {
        let w = |names: &[&str]| NixRelease::from_block(&block(names)).wording;
        assert_eq!(w(&["builders", "max-jobs"]), Wording::Classic, "Nix 2.8, or Lix's overrides");
        assert_eq!(w(&["json-log-path", "max-jobs"]), Wording::CannotBuild);
        assert_eq!(w(&["external-builders", "json-log-path", "narinfo-cache-meta-ttl"]), Wording::Reasons);
        assert_eq!(w(&["external-builders", "json-log-path"]), Wording::CannotBuild, "2.32 and 2.33 send it");
        assert_eq!(NixRelease::from_block(&block(&["narinfo-cache-meta-ttl"])).name, "Nix 2.34 or later");
    }

    #[test]
    fn the_settings_block_tells_where_the_hook_takes_experiments_from() {
        let whole = |extra: &[&str]| -> Vec<(String, String)> {
            let mut b: Vec<(String, String)> =
                (0..WHOLE_BLOCK).map(|i| (format!("setting-{i}"), String::new())).collect();
            b.extend(block(extra));
            b
        };
        let from_block = |b: &[(String, String)]| NixRelease::from_block(b).experiments_from_block;
        assert!(
            from_block(&whole(&["experimental-features"])),
            "Nix 2.8 to 2.14: every setting, no ssl-cert-file"
        );
        assert!(!from_block(&whole(&["ssl-cert-file"])), "Nix 2.15 and later");
        assert!(!from_block(&whole(&["ssl-cert-file", "narinfo-cache-meta-ttl"])), "Nix 2.34");
        assert!(
            !from_block(&block(&["experimental-features", "builders"])),
            "Lix: the overridden settings only"
        );
        let v = |text: &str| NixRelease::from_version(text).unwrap().experiments_from_block;
        assert!(v("nix-store (Nix) 2.8.0") && v("2.14.1"));
        assert!(!v("2.15.0") && !v("nix-store (Nix) 2.34.8") && !v("nix-store (Lix, like Nix) 2.93.0"));
    }

    #[test]
    fn only_nix_2_30_and_later_tell_of_a_kept_failed_build() {
        let v = |text: &str| NixRelease::from_version(text).unwrap().tells_of_kept_failed_builds();
        assert!(!v("2.8.0") && !v("2.26.3") && !v("2.29.1") && !v("lix 2.93.0"));
        assert!(v("2.30.0") && v("2.34.8"));
        assert!(NixRelease::from_block(&block(&["json-log-path"])).tells_of_kept_failed_builds());
        assert!(!NixRelease::from_block(&block(&["builders"])).tells_of_kept_failed_builds());
    }

    #[test]
    fn version_lines_tell_the_release() {
        let r = |text: &str| NixRelease::from_version(text).map(|r| (r.name, r.wording));
        assert_eq!(r("nix-store (Nix) 2.8.0\n"), Some(("Nix 2.8.0".into(), Wording::Classic)));
        assert_eq!(r("nix-store (Nix) 2.26.3"), Some(("Nix 2.26.3".into(), Wording::Classic)));
        assert_eq!(r("nix-store (Nix) 2.31.1"), Some(("Nix 2.31.1".into(), Wording::CannotBuild)));
        assert_eq!(r("nix-store (Nix) 2.34.8"), Some(("Nix 2.34.8".into(), Wording::Reasons)));
        assert_eq!(
            r("2.36.0pre20260801_1234abcd"),
            Some(("Nix 2.36.0pre20260801_1234abcd".into(), Wording::Reasons))
        );
        assert_eq!(r("nix-store (Lix, like Nix) 2.93.0"), Some(("Lix 2.93.0".into(), Wording::Classic)));
        assert_eq!(r("lix 2.91"), Some(("Lix 2.91".into(), Wording::Classic)));
        assert_eq!(r("nix-store: command not found"), None);
        assert_eq!(r(""), None);
    }

    #[test]
    fn each_wording_as_nix_prints_it() {
        let drv = "/nix/store/00000000000000000000000000000000-x.drv";
        let say = |w: Wording, max_jobs, system, features: &[&str]| {
            w.nothing_can_build(&request(system, features), &local(max_jobs))
        };
        assert_eq!(say(Wording::Classic, 0, "x86_64-linux", &[]).unwrap(), "unable to start any build");
        assert_eq!(
            say(Wording::Classic, 1, "aarch64-linux", &["kvm", "big-parallel"]).unwrap(),
            format!(
                "a 'aarch64-linux' with features {{big-parallel, kvm}} is required to build '{drv}', but I am \
                 a 'x86_64-linux' with features {{benchmark, kvm}}"
            )
        );
        assert_eq!(say(Wording::CannotBuild, 0, "x86_64-linux", &[]).unwrap(), "Unable to start any build");
        assert_eq!(
            say(Wording::CannotBuild, 2, "x86_64-linux", &["cuda"]).unwrap(),
            format!("Cannot build '{drv}'. Reason: required system or feature not available")
        );
        assert_eq!(
            say(Wording::Reasons, 0, "aarch64-linux", &[]).unwrap(),
            format!("Cannot build '{drv}'. Reason: local builds are disabled (max-jobs = 0)"),
            "max-jobs 0 is the first reason Nix gives"
        );
        assert_eq!(
            say(Wording::Reasons, 1, "aarch64-linux", &["cuda"]).unwrap(),
            format!("Cannot build '{drv}'. Reason: platform mismatch")
        );
        assert_eq!(
            say(Wording::Reasons, 1, "i686-linux", &["cuda"]).unwrap(),
            format!("Cannot build '{drv}'. Reason: missing system features")
        );
        for w in WORDINGS {
            assert_eq!(say(w, 1, "x86_64-linux", &["kvm"]), None, "{w:?}: Nix builds it itself");
            assert_eq!(say(w, 1, "builtin", &[]), None, "{w:?}: Nix builds `builtin` itself");
        }
    }

    #[test]
    fn an_unknown_release_names_every_wording_once() {
        let req = request("x86_64-linux", &[]);
        assert_eq!(
            nix_fails_with(None, &req, &local(0)).unwrap(),
            "Nix fails with \"unable to start any build\" (Nix up to 2.33, and Lix) or \"Cannot build \
             '/nix/store/00000000000000000000000000000000-x.drv'. Reason: local builds are disabled \
             (max-jobs = 0)\" (Nix 2.34 and later)"
        );
        let req = Request { drv_path: "(no derivation)".into(), ..request("aarch64-linux", &[]) };
        let text = nix_fails_with(None, &req, &local(1)).unwrap();
        assert!(
            text.starts_with("Nix fails with \"a 'aarch64-linux' with features {} is required to build '…'"),
            "{text}"
        );
        assert!(
            text.contains("(Nix up to 2.29, and Lix) or \"Cannot build '…'. Reason: required system"),
            "{text}"
        );
        assert!(
            text.ends_with("\"Cannot build '…'. Reason: platform mismatch\" (Nix 2.34 and later)"),
            "{text}"
        );

        let known = NixRelease::from_version("nix-store (Nix) 2.34.8").unwrap();
        assert_eq!(
            nix_fails_with(Some(&known), &req, &local(1)).unwrap(),
            "Nix 2.34.8 fails with \"Cannot build '…'. Reason: platform mismatch\""
        );
        assert_eq!(nix_fails_with(Some(&known), &request("x86_64-linux", &[]), &local(1)), None);
    }
}
