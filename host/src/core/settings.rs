//! Nix's settings as the hook must see them: `nix.conf` (Lix ≤ 2.93 sends only overridden
//! settings), with the parent's settings block laid over it, and the machines they name.

use std::path::Path;

use anyhow::{Context, Result};
use nwh_machines::{Machines, ParseContext};
use nwh_nixconf::Settings;

use crate::transfer::local_store::LocalStore;
use nwh_decision::LocalMachine;

/// Loads nix.conf and `NIX_CONFIG` as Nix does, then applies the parent's block.
pub fn load(block: &[(String, String)]) -> Result<Settings> {
    let mut settings = Settings::from_env(remote_systems_default())?;
    apply_block(&mut settings, block)?;
    Ok(settings)
}

/// The local store that Nix's `store` setting names (`auto` when unset): where the hook reads
/// derivations and brings outputs back, with `override_uri` (the builder front-end's `--store`)
/// in its place when given.
pub fn local_store(settings: &Settings, override_uri: Option<&str>) -> Result<LocalStore> {
    let uri = override_uri.or(settings.get("store")).unwrap_or("auto");
    LocalStore::parse(uri).with_context(|| format!("Nix's `store` setting, `{uri}`"))
}

/// Lays the parent's block over `settings` as the parent's own hook takes it: Nix 2.15 and
/// later (and Lix) leave out `experimental-features`, which their hook's `settings.set` does not
/// know (`NixRelease::experiments_from_block`); the experiments of the hook's own `nix.conf`
/// and `NIX_CONFIG` stay. They decide whether the local machine could build a derivation that
/// needs `ca-derivations` or `recursive-nix`, so the hook answers as that release's own does.
pub fn apply_block(settings: &mut Settings, block: &[(String, String)]) -> Result<()> {
    let from_block = crate::core::nix_release::NixRelease::from_block(block).experiments_from_block;
    let taken = block.iter().filter(|(k, _)| {
        from_block || !matches!(k.as_str(), "experimental-features" | "extra-experimental-features")
    });
    settings.apply_block(taken.map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(())
}

/// The legacy `NIX_REMOTE_SYSTEMS` only changes the default of `builders`.
fn remote_systems_default() -> Option<String> {
    nwh_nixconf::nix_remote_systems_env()
        .filter(|v| !v.is_empty())
        .map(|v| nwh_machines::builders_from_remote_systems_env(&v.to_string_lossy()))
}

/// What the parent can build itself, as Nix's own hook reckons it: its `max-jobs`, systems and
/// the local store's features (`system-features`, plus `ca-derivations` and `recursive-nix`
/// when those experiments are on).
pub fn local(settings: &Settings) -> LocalMachine {
    LocalMachine {
        max_jobs: settings.max_jobs(),
        system: settings.system().to_string(),
        extra_platforms: settings.extra_platforms(),
        features: settings.local_store_features(),
    }
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

/// The machines file of Nix's own default `builders` (`@<conf dir>/machines`), when `builders`
/// is that default and the file does not exist: then Nix, and the hook, say nothing of it (every
/// purely local build would otherwise carry a warning). `None` when the user named the file —
/// in `nix.conf`, `NIX_CONFIG` or `NIX_REMOTE_SYSTEMS` — or it exists. A value given on the
/// command line (`--builders @/etc/nix/machines`) reaches the hook as the default does, and is
/// taken for it.
pub fn absent_default_machines_file(settings: &Settings) -> Option<String> {
    let default = format!("{}/machines", nwh_nixconf::conf_dir_from_env().display());
    if settings.builders().trim() != format!("@{default}")
        || nwh_nixconf::nix_remote_systems_env().is_some_and(|v| !v.is_empty())
    {
        return None;
    }
    match std::fs::symlink_metadata(&default) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return None,
    }
    // Nix sends every setting, so the block's `builders` hides whether nix.conf named it.
    let named = match settings.origin("builders") {
        None => false,
        Some(nwh_nixconf::Origin::Block) => {
            Settings::from_env(None).is_ok_and(|own| own.origin("builders").is_some())
        }
        Some(_) => true,
    };
    (!named).then_some(default)
}

/// The real builders behind builder mode: the `machines` option, in the syntax of Nix's
/// `builders`, with paths as seen from `/`. `None` when the option is not set.
pub fn builder_machines(opts: &nwh_options::Options, settings: &Settings) -> Option<Machines> {
    let value = opts.machines.as_ref()?;
    let ctx = ParseContext { local_system: settings.system().to_string(), cwd: "/".into() };
    Some(nwh_machines::parse_builders(value, nwh_options::MACHINES_OPTION, &ctx))
}

/// What the offline tools (`check`, `explain`) read, read as the hook reads it: the options
/// file, nix.conf and `NIX_CONFIG` (with `builders` replaced when asked), and the machines with
/// paths as seen from `/`, where Nix starts the hook.
pub struct AsTheHook {
    pub opts: nwh_options::Options,
    pub settings: Settings,
    pub machines: Machines,
    /// nix.conf's warnings, worded for the user.
    pub warnings: Vec<String>,
}

/// The flags of the offline tools that say what to read instead of the defaults.
#[derive(Debug, clap::Args)]
pub struct HookInputs {
    /// The hook's options file (default /etc/nix/nix-wasm-hook.toml): policy, state and load
    /// directories, SSH options.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// A `builders` value to use instead of nix.conf's (same syntax: lines, `;`, `@file`).
    #[arg(long, value_name = "BUILDERS")]
    pub builders: Option<String>,
}

pub fn as_the_hook(inputs: &HookInputs) -> Result<AsTheHook> {
    let opts = nwh_options::Options::load(inputs.config.as_deref())?;
    let mut settings = load(&[]).map_err(|e| e.context("reading nix.conf"))?;
    if let Some(b) = &inputs.builders {
        settings.apply_block([("builders", b)])?;
    }
    let warnings = settings.warnings().iter().map(|w| w.to_string()).collect();
    let machines = machines(&settings, Path::new("/"));
    Ok(AsTheHook { opts, settings, machines, warnings })
}
