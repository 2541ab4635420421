//! `nix-wasm-hook check`: is every builder usable, as the hook will use it? It reads nix.conf
//! and the machines exactly as the hook does (paths as seen from `/`), connects with exactly
//! the hook's SSH (same options, keys, known_hosts, control sockets), and compares what each
//! line declares with what the builder's Nix really is. This is the command (its arguments,
//! the printing); [`probe`] does the checking, into [`Report`]s.

use std::io::Write;

use anyhow::Result;
use nwh_machines::{Machine, Severity};

use crate::core::settings::AsTheHook;
use crate::transfer::ssh::SshOptions;

mod builder_line;
mod probe;
mod report;

use probe::check_all;
pub use report::{Facts, Problem, Report, Status};

/// Is every builder usable, as the hook will use it?
///
/// Reads nix.conf and the machines file as the hook does, then checks every builder with the
/// hook's own SSH: the host key, that Nix answers, its version, and that the systems and
/// features each line declares are the builder's. Exit status: 0 when every builder is usable,
/// 1 when one is not (or a line is unreadable), 2 when the check itself could not run.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inputs: crate::core::settings::HookInputs,
    /// One JSON object, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub const EXIT_UNUSABLE: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

pub fn main(args: &Args) -> i32 {
    crate::tools::main("check", EXIT_ERROR, |out| run(args, out))
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let AsTheHook { opts, settings, machines: mut parsed, warnings: mut notes } =
        crate::core::settings::as_the_hook(&args.inputs)?;
    // Nix's default machines file absent: the hook is silent about it, as Nix is; here it is
    // worth a note, not a warning. `--builders` names a file, which keeps its warning.
    if let Some(file) = crate::core::settings::absent_default_machines_file(&settings)
        .filter(|_| args.inputs.builders.is_none())
    {
        parsed.diagnostics.retain(|d| !d.is_missing_file(&file));
        notes.push(format!(
            "Nix's default machines file '{file}' does not exist, so no builder comes from it (Nix and \
             the hook say nothing of it)"
        ));
    }
    let uid = rustix::process::geteuid().as_raw();
    if uid != 0 {
        notes.push(format!(
            "check runs as uid {uid}, but the hook runs as root under the Nix daemon, with root's keys \
             and known_hosts: run `sudo nix-wasm-hook check` to see what the hook sees"
        ));
    }
    let real = real_builders(&opts, &settings, &parsed.machines, &mut notes);
    let diagnostics: Vec<&nwh_machines::Diagnostic> =
        parsed.diagnostics.iter().chain(real.iter().flat_map(|r| &r.diagnostics)).collect();
    let unreadable = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let ssh_opts = SshOptions::from(&opts);
    let store = crate::core::settings::local_store(&settings, None)?;
    let real_reports =
        real.as_ref().map(|r| check_all(&r.machines, &ssh_opts, None, &store)).unwrap_or_default();
    let reports = check_all(&parsed.machines, &ssh_opts, real.as_ref(), &store);
    let usable = unreadable == 0 && reports.iter().chain(&real_reports).all(|r| r.status != Status::Unusable);
    if args.json {
        let diagnostics: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "notes": notes, "machines_file": diagnostics, "builders": reports,
                "real_builders": real_reports, "usable": usable,
            }),
        )?;
        writeln!(out)?;
    } else {
        for n in &notes {
            writeln!(out, "note: {n}")?;
        }
        for d in &diagnostics {
            writeln!(out, "{d}")?;
        }
        if parsed.machines.is_empty() {
            writeln!(out, "no usable machine in `builders` (from {})", builders_origin(&settings))?;
        }
        for r in &reports {
            print_report(out, r)?;
        }
        if real.is_some() {
            writeln!(out, "\nbehind it, the real builders of {}:", nwh_options::MACHINES_OPTION)?;
        }
        for r in &real_reports {
            print_report(out, r)?;
        }
        let all = reports.len() + real_reports.len();
        let bad = reports.iter().chain(&real_reports).filter(|r| r.status == Status::Unusable).count();
        writeln!(
            out,
            "\n{all} builder(s): {} usable, {bad} unusable; {unreadable} machines line(s) unreadable",
            all - bad
        )?;
    }
    Ok(if usable { 0 } else { EXIT_UNUSABLE })
}

/// The real builders behind a builder-mode line, when `builders` has one; a `machines`
/// option that nothing reads is worth a note.
fn real_builders(
    opts: &nwh_options::Options,
    settings: &nwh_nixconf::Settings,
    machines: &[Machine],
    notes: &mut Vec<String>,
) -> Option<nwh_machines::Machines> {
    let builder_mode = machines.iter().any(|m| m.builder_mode_program().is_some());
    if !builder_mode {
        if opts.machines.is_some() {
            notes.push(format!(
                "{} is read only in builder mode, and no line of `builders` runs nix-wasm-hook \
                 (`ssh://localhost?remote-program=/path/to/nix-wasm-hook …`)",
                nwh_options::MACHINES_OPTION
            ));
        }
        return None;
    }
    crate::core::settings::builder_machines(opts, settings)
}

fn builders_origin(settings: &nwh_nixconf::Settings) -> String {
    settings.origin("builders").map_or_else(|| "its default".to_string(), |o| o.to_string())
}

fn print_report(out: &mut dyn Write, r: &Report) -> Result<()> {
    let status = match r.status {
        Status::Ok => "ok",
        Status::Warning => "WARNING",
        Status::Unusable => "UNUSABLE",
    };
    writeln!(out, "\n{status:<8}  {} ({})", r.uri, r.line)?;
    let f = &r.facts;
    let mut facts = vec![format!("host key: {}", f.host_key)];
    if let Some(v) = &f.nix_version {
        facts.push(format!("{v}{}", f.protocol.as_ref().map_or(String::new(), |p| format!(" ({p})"))));
    }
    if let Some(s) = &f.system {
        let mut systems = vec![s.clone()];
        systems.extend(f.extra_platforms.iter().cloned());
        facts.push(format!("builds {}", systems.join(", ")));
        facts.push(format!(
            "features: {}",
            if f.system_features.is_empty() { "none".into() } else { f.system_features.join(", ") }
        ));
    }
    writeln!(out, "          {}", facts.join("; "))?;
    for p in &r.problems {
        writeln!(out, "          problem: {}", p.problem)?;
        if !p.fix.is_empty() {
            writeln!(out, "          fix: {}", p.fix)?;
        }
    }
    Ok(())
}
