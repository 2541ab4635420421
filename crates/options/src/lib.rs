//! nix-wasm-hook's own options: a TOML file (a `build-hook` line is a poor place for many
//! words) with command-line flags laid over it. One struct is both; values are checked when
//! read, so a value that got through works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod error;
pub use error::OptionsError;

/// Where the options file is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/nix/nix-wasm-hook.toml";

/// Fuel for one decision when `policy-fuel` is not set (the default policy's grows with the
/// request).
pub const DEFAULT_POLICY_FUEL: u64 = 50_000_000;
/// `policy-timeout-ms` when not set.
pub const DEFAULT_POLICY_TIMEOUT_MS: u64 = 200;
/// `policy-memory-mib` when not set.
pub const DEFAULT_POLICY_MEMORY_MIB: u64 = 64;
/// `connect-timeout` when not set, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// `postpone-wait-ms` when not set.
pub const DEFAULT_POSTPONE_WAIT_MS: u64 = 3000;
/// `trace-max-bytes` when not set: a few hundred thousand decisions on a dozen machines.
pub const DEFAULT_TRACE_MAX_BYTES: u64 = 64 << 20;

/// Where the `machines` option's entries come from, as diagnostics name it.
pub const MACHINES_OPTION: &str = "nix-wasm-hook option 'machines'";

/// Every option, once: the keys of the options file (TOML, kebab-case) and the command-line
/// flags of the same names, which win over the file. Unknown keys are errors that name the
/// key, because a typo here would otherwise silently change where builds go.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// A policy component to decide instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Fuel (about one unit per Wasm instruction) a policy may spend per decision.
    #[arg(long, value_name = "N")]
    pub policy_fuel: Option<u64>,
    /// Wall-clock limit per decision, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub policy_timeout_ms: Option<u64>,
    /// Linear memory a policy may use, in MiB.
    #[arg(long, value_name = "MIB")]
    pub policy_memory_mib: Option<u64>,
    /// Where compiled policies are cached; "" disables the cache. It must be the hook's user's
    /// and writable by no one else, or it goes unused (one warning).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The current-load directory shared with Nix's own hook.
    #[arg(long, value_name = "DIR")]
    pub current_load: Option<PathBuf>,
    /// The hook's own state (SSH control sockets); default `$NIX_STATE_DIR/nix-wasm-hook`.
    /// It must be the hook's user's and closed to everyone else (made 0700 when absent).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for a builder's SSH handshake.
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// Connect before answering `# accept` (the default, as Nix's hook does): an unreachable
    /// builder is then skipped for the next one. `false` answers sooner, but a builder that
    /// turns out to be unreachable fails the build.
    #[arg(long, value_name = "BOOL")]
    pub connect_before_accept: Option<bool>,
    /// Before answering `postpone` (after which Nix waits `build-poll-interval`, 5 s, even if
    /// a slot frees at once), wait up to this many milliseconds for a slot to free.
    #[arg(long, value_name = "MS")]
    pub postpone_wait_ms: Option<u64>,
    /// Append one JSON line per decision to this file (see docs/replay.md).
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// When the trace reaches this size it is moved to `TRACE.1` (one old file is kept).
    #[arg(long, value_name = "BYTES")]
    pub trace_max_bytes: Option<u64>,
    /// Builder mode (`--serve`) only: the real builders behind this one, in the syntax of
    /// Nix's `builders` (`@/etc/nix/nix-wasm-hook.machines`, lines, `;`). Hook mode takes Nix's
    /// own `builders`.
    #[arg(long, value_name = "BUILDERS")]
    pub machines: Option<String>,
    /// How fast the machine Nix runs on builds, on the scale of the machines file's speed
    /// factors: what a policy (contract 0.3) weighs a local build with. Default 1.
    #[arg(long, value_name = "FACTOR")]
    pub local_speed_factor: Option<f64>,
}

impl Options {
    /// Reads the options file `config` names, or the default one ([`DEFAULT_CONFIG`]), which
    /// may be missing.
    pub fn load(config: Option<&Path>) -> Result<Options, OptionsError> {
        match config {
            Some(path) => Options::from_file(path, true),
            None => Options::from_file(Path::new(DEFAULT_CONFIG), false),
        }
    }

    /// Reads `path`; a missing file is fine only when the path was not asked for explicitly.
    pub fn from_file(path: &Path, explicit: bool) -> Result<Options, OptionsError> {
        let text = match nwh_files::read_to_string(path, nwh_files::OPTIONS_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Options::default()),
            Err(error) => return Err(OptionsError::Read { path: path.to_path_buf(), error }),
        };
        Options::parse(&text).map_err(|e| OptionsError::In { path: path.to_path_buf(), error: Box::new(e) })
    }

    pub fn parse(text: &str) -> Result<Options, OptionsError> {
        let opts: Options = toml::from_str(text).map_err(|e| OptionsError::Syntax(e.to_string()))?;
        opts.check(Spelling::File)?;
        Ok(opts)
    }

    /// Refuses, by name, values that make no sense: a relative path (the hook runs in `/`, so
    /// it would mean a path under `/`), and a number outside what the hook can work with (no
    /// fuel, no memory, a memory size that overflows). A value that got through here works.
    pub fn check(&self, spelling: Spelling) -> Result<(), OptionsError> {
        let paths = [
            ("policy", &self.policy),
            ("trace", &self.trace),
            ("cache-dir", &self.cache_dir),
            ("current-load", &self.current_load),
            ("state-dir", &self.state_dir),
        ];
        for (key, p) in paths {
            let Some(p) = p else { continue };
            // `cache-dir = ""` turns the cache off.
            if p.is_absolute() || (key == "cache-dir" && p.as_os_str().is_empty()) {
                continue;
            }
            return Err(OptionsError::Relative {
                given: spelling.of(key, &format!("{:?}", p.display().to_string())),
                means: Path::new("/").join(p),
            });
        }
        if let Some(speed) = self.local_speed_factor {
            // As Nix reads the machines file's fifth column: a positive number.
            if !(speed.is_finite() && speed > 0.0) {
                return Err(OptionsError::NotASpeed { given: spelling.of("local-speed-factor", &speed) });
            }
        }
        for bound in BOUNDS {
            let Some(value) = (bound.get)(self) else { continue };
            if !bound.range.contains(&value) {
                return Err(OptionsError::OutOfRange {
                    given: spelling.of(bound.key, &value),
                    min: *bound.range.start(),
                    max: *bound.range.end(),
                    why: bound.why,
                    default: bound.default,
                });
            }
        }
        Ok(())
    }

    /// Flags win over the file.
    pub fn overlay(mut self, flags: Options) -> Options {
        macro_rules! over {
            ($($f:ident),*) => { $( if flags.$f.is_some() { self.$f = flags.$f; } )* };
        }
        over!(
            policy,
            policy_fuel,
            policy_timeout_ms,
            policy_memory_mib,
            cache_dir,
            current_load,
            state_dir,
            connect_timeout,
            connect_before_accept,
            postpone_wait_ms,
            trace,
            trace_max_bytes,
            machines,
            local_speed_factor
        );
        self
    }

    /// Nix's own location: `current-load` in the state directory of the local store
    /// (`store_state_dir`: `$NIX_STATE_DIR`, default `/nix/var/nix`, or `/x/nix/var/nix` for a
    /// chroot store `/x`), so that the slots are those Nix's own hook takes for that store.
    pub fn current_load_dir(&self, store_state_dir: &Path) -> PathBuf {
        match &self.current_load {
            Some(p) => p.clone(),
            None => store_state_dir.join("current-load"),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
    }

    pub fn postpone_wait(&self) -> Duration {
        Duration::from_millis(self.postpone_wait_ms.unwrap_or(DEFAULT_POSTPONE_WAIT_MS))
    }

    pub fn trace_max_bytes(&self) -> u64 {
        self.trace_max_bytes.unwrap_or(DEFAULT_TRACE_MAX_BYTES)
    }

    pub fn local_speed_factor(&self) -> f64 {
        self.local_speed_factor.unwrap_or(1.0)
    }

    pub fn connect_before_accept(&self) -> bool {
        self.connect_before_accept.unwrap_or(true)
    }

    /// The hook's own state: SSH control sockets, which builders are down.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| nix_state_dir().join("nix-wasm-hook"))
    }
}

/// How an option is spelled where it was given, for errors that name it as the user wrote it.
#[derive(Clone, Copy, Debug)]
pub enum Spelling {
    /// `key = value`, in the options file.
    File,
    /// `--key value`, on the command line.
    Flag,
}

impl Spelling {
    fn of(self, key: &str, value: &dyn std::fmt::Display) -> String {
        match self {
            Spelling::File => format!("`{key} = {value}`"),
            Spelling::Flag => format!("`--{key} {value}`"),
        }
    }
}

/// The numbers an option may take, and why.
struct Bound {
    key: &'static str,
    get: fn(&Options) -> Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
    why: &'static str,
}

const BOUNDS: [Bound; 5] = [
    Bound {
        key: "policy-fuel",
        get: |o| o.policy_fuel,
        range: 10_000..=100_000_000_000,
        default: DEFAULT_POLICY_FUEL,
        why:
            "a Rust policy spends ~60 000 on a few machines; beyond the top, the deadline stops a call first",
    },
    Bound {
        key: "policy-timeout-ms",
        get: |o| o.policy_timeout_ms,
        range: 10..=60_000,
        default: DEFAULT_POLICY_TIMEOUT_MS,
        why: "the deadline is counted in 10 ms ticks, and Nix waits for every decision",
    },
    Bound {
        key: "policy-memory-mib",
        get: |o| o.policy_memory_mib,
        range: 1..=4096,
        default: DEFAULT_POLICY_MEMORY_MIB,
        why: "a Wasm memory holds at most 4 GiB",
    },
    Bound {
        key: "connect-timeout",
        get: |o| o.connect_timeout,
        range: 1..=600,
        default: DEFAULT_CONNECT_TIMEOUT,
        why: "seconds; Nix waits for the answer meanwhile",
    },
    Bound {
        key: "postpone-wait-ms",
        get: |o| o.postpone_wait_ms,
        range: 0..=600_000,
        default: DEFAULT_POSTPONE_WAIT_MS,
        why: "Nix waits for the answer meanwhile",
    },
];

/// Nix's state directory as Nix finds it: `NIX_STATE_DIR`, else `/nix/var/nix`.
pub fn nix_state_dir() -> PathBuf {
    std::env::var_os("NIX_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nix/var/nix"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Options::parse("polcy = \"/x.wasm\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown field `polcy`"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn relative_policy_is_refused_with_the_resolved_path() {
        let msg = format!("{:#}", Options::parse("policy = \"p.wasm\"").unwrap_err());
        assert!(msg.contains("it would mean /p.wasm"), "{msg}");
        assert!(msg.contains("absolute path"), "{msg}");
    }

    #[test]
    fn a_relative_trace_is_refused() {
        let msg = format!("{:#}", Options::parse("trace = \"t.jsonl\"").unwrap_err());
        assert!(msg.contains("`trace = ") && msg.contains("mean /t.jsonl"), "{msg}");
        let o = Options::parse("trace = \"/var/log/t.jsonl\"\ntrace-max-bytes = 2000000\n").unwrap();
        assert_eq!(o.trace_max_bytes(), 2_000_000);
    }

    #[test]
    fn flags_override_file() {
        let file = Options::parse("policy = \"/a.wasm\"\npolicy-fuel = 100000\n").unwrap();
        let flags = Options { policy: Some("/b.wasm".into()), ..Default::default() };
        let o = file.overlay(flags);
        assert_eq!(o.policy.as_deref(), Some(Path::new("/b.wasm")));
        assert_eq!(o.policy_fuel, Some(100_000));
    }

    #[test]
    fn a_local_speed_factor_is_a_positive_number() {
        assert_eq!(Options::parse("local-speed-factor = 2.5").unwrap().local_speed_factor(), 2.5);
        assert_eq!(Options::default().local_speed_factor(), 1.0);
        for bad in ["0.0", "-1.0", "nan", "inf"] {
            let msg = format!("{:#}", Options::parse(&format!("local-speed-factor = {bad}")).unwrap_err());
            assert!(msg.contains("`local-speed-factor = ") && msg.contains("above 0"), "{msg}");
        }
        let flag = Options { local_speed_factor: Some(0.0), ..Default::default() };
        let msg = format!("{:#}", flag.check(Spelling::Flag).unwrap_err());
        assert!(msg.starts_with("`--local-speed-factor 0`"), "{msg}");
    }

    #[test]
    fn missing_file_is_fine_unless_explicit() {
        let p = Path::new("/nonexistent/nix-wasm-hook.toml");
        assert_eq!(Options::from_file(p, false).unwrap(), Options::default());
        assert!(Options::from_file(p, true).is_err());
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let msg = format!("{:#}", Options::parse("\npolicy-fuel = \"lots\"\n").unwrap_err());
        assert!(msg.contains("line 2") && msg.contains("policy-fuel"), "{msg}");
    }

    #[test]
    fn nonsense_numbers_are_refused_by_name_with_the_range() {
        for (text, words) in [
            ("policy-fuel = 0", "`policy-fuel = 0` is out of range: it must be from 10000 to 100000000000"),
            ("policy-memory-mib = 0", "`policy-memory-mib = 0` is out of range: it must be from 1 to 4096"),
            // Would overflow when turned into bytes.
            (
                "policy-memory-mib = 9223372036854775807",
                "it must be from 1 to 4096 (a Wasm memory holds at most 4 GiB",
            ),
            ("policy-timeout-ms = 0", "`policy-timeout-ms = 0` is out of range"),
            ("connect-timeout = 0", "`connect-timeout = 0` is out of range"),
        ] {
            let msg = format!("{:#}", Options::parse(text).unwrap_err());
            assert!(msg.contains(words), "{text}: {msg}");
        }
        assert!(Options::parse("postpone-wait-ms = 0").is_ok(), "no wait is a choice");
    }

    #[test]
    fn every_relative_path_is_refused_with_the_path_it_would_mean() {
        for key in ["cache-dir", "current-load", "state-dir", "policy", "trace"] {
            let msg = format!("{:#}", Options::parse(&format!("{key} = \"var/x\"")).unwrap_err());
            assert!(msg.contains(&format!("`{key} = \"var/x\"` is a relative path")), "{msg}");
            assert!(msg.contains("it would mean /var/x"), "{msg}");
        }
        assert!(Options::parse("cache-dir = \"\"").is_ok(), "an empty cache-dir turns the cache off");
        let flags = Options { state_dir: Some("run/nwh".into()), ..Default::default() };
        let msg = format!("{:#}", flags.check(Spelling::Flag).unwrap_err());
        assert!(msg.starts_with("`--state-dir \"run/nwh\"` is a relative path"), "{msg}");
    }
}
