//! Nix's settings as the hook must see them: `nix.conf` (Lix ≤ 2.93 sends only overridden
//! settings), with the parent's settings block laid over it, and the machines they name.

use std::path::Path;

use anyhow::Result;
use nwh_machines::{Machines, ParseContext};
use nwh_nixconf::Settings;

/// Loads nix.conf and `NIX_CONFIG` as Nix does, then applies the parent's block.
pub fn load(block: &[(String, String)]) -> Result<Settings> {
    let mut settings = Settings::from_env(remote_systems_default())?;
    settings.apply_block(block.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(settings)
}

/// The legacy `NIX_REMOTE_SYSTEMS` only changes the default of `builders`.
fn remote_systems_default() -> Option<String> {
    nwh_nixconf::nix_remote_systems_env()
        .filter(|v| !v.is_empty())
        .map(|v| nwh_machines::builders_from_remote_systems_env(&v.to_string_lossy()))
}

/// The machines named by `builders`, resolved as the hook process sees paths (its working
/// directory is `/` under Nix; relative paths are reported, not guessed).
pub fn machines(settings: &Settings, cwd: &Path) -> Machines {
    let ctx = ParseContext { local_system: settings.system().to_string(), cwd: cwd.to_path_buf() };
    let value = settings.builders();
    let from_env = nwh_nixconf::nix_remote_systems_env().is_some_and(|env| {
        // Nix itself turns NIX_REMOTE_SYSTEMS into the `builders` it sends us (joined with a
        // space up to 2.23, a newline after), so a path from it is reported against it.
        let env = env.to_string_lossy();
        let joined: Vec<String> = env.split(':').filter(|p| !p.is_empty()).map(|p| format!("@{p}")).collect();
        settings.origin("builders").is_none() || value == joined.join(" ") || value == joined.join("\n")
    });
    let source = if from_env { nwh_machines::REMOTE_SYSTEMS_ENV } else { nwh_machines::BUILDERS_SETTING };
    nwh_machines::parse_builders(&value, source, &ctx)
}
