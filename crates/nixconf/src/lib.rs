//! nix.conf as a build hook has to read it.
//!
//! Nix sends every setting in the settings block, but Lix ≤ 2.93 sends only the ones the client
//! overrode (docs/hook-protocol.md §4), so the hook must itself load what the parent loaded from
//! the global configuration: `$NIX_CONF_DIR/nix.conf` (default `/etc/nix/nix.conf`), then
//! `NIX_CONFIG`, and then lay the block over both.
//!
//! The syntax follows Nix: one `name = value` per line, `#` starts a comment anywhere, runs of
//! blanks collapse to one space, `include path` / `!include path` (relative to the including
//! file; `!include` tolerates a missing file), and `extra-<name>` appends to a list setting.
//! Unknown settings are kept, not rejected, as Nix only warns about them.
//!
//! ```
//! use nwh_nixconf::{HostDefaults, LoadOptions, Settings};
//! let mut opts = LoadOptions::new("/nonexistent/etc/nix", HostDefaults::detect());
//! opts.nix_config = Some("max-jobs = 4\nextra-system-features = gpu".into());
//! let mut settings = Settings::load(opts).unwrap();
//! settings.apply_block([("max-jobs", "0")]).unwrap();
//! assert_eq!(settings.max_jobs(), 0);
//! assert!(settings.system_features().contains("gpu"));
//! assert_eq!(settings.builders(), "@/nonexistent/etc/nix/machines");
//! ```
//!
//! Modules: `load` (where settings come from and in which order), `parse` (the nix.conf
//! syntax and its includes), `settings` (the values set and Nix's rules for setting them),
//! `values` (the typed settings' values, checked when set), `accessors` (the typed settings),
//! `host` (the machine's defaults), `origin`, `error`.

mod accessors;
mod error;
mod host;
mod load;
mod origin;
mod parse;
mod settings;
mod values;

pub use error::{ConfError, Result, Warning, MAX_INCLUDE_DEPTH};
pub use host::{compile_time_system, HostDefaults};
pub use load::{conf_dir_from_env, nix_remote_systems_env, LoadOptions, DEFAULT_CONF_DIR};
pub use origin::Origin;
pub use settings::Settings;
