//! `check` of a builder-mode line (`ssh://localhost?remote-program=…/nix-wasm-hook`). Nix's
//! own hook runs that program itself, without ssh, so what matters is that it starts and
//! answers as a builder, and that the real builders behind it (its `machines` option) can do
//! what the line promises Nix: every system and feature, and more slots than they have.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nwh_machines::{Machine, Machines};

use super::report::{Report, Status};
use crate::transfer::target;

/// Checks the line `m`, which runs `program`, against `real`, the real builders behind it
/// (`None`: the `machines` option is not set).
pub fn check(m: &Machine, program: &str, real: Option<&Machines>) -> Report {
    let mut r = Report::new(m);
    r.facts.host_key = "not used: Nix runs it on this machine, without ssh".into();
    if m.uri.starts_with("ssh-ng://") {
        // Nix fakes ssh for ssh-ng://localhost too, and starts the program with `--stdio`.
        r.add(
            Status::Unusable,
            format!(
                "for an ssh-ng:// line Nix starts `{program} --stdio` (the worker protocol), which \
                 nix-wasm-hook does not serve: builder mode speaks the serve protocol"
            ),
            format!("write ssh://localhost instead of ssh-ng://localhost in {}", r.line),
        );
        return r;
    }
    if !Path::new(program).is_absolute() {
        r.add(
            Status::Warning,
            format!("remote-program `{program}` is not an absolute path: it is looked up in the PATH of nix-daemon, not of your shell"),
            format!("write the absolute path in {}, e.g. remote-program=/usr/local/bin/nix-wasm-hook", r.line),
        );
    }
    match greet(program) {
        Ok(version) => r.facts.protocol = Some(format!("serve protocol {}.{}", version >> 8, version & 0xff)),
        Err(e) => r.add(
            Status::Unusable,
            format!("`{program} --serve --write`, as Nix's hook starts it, does not serve: {e:#}"),
            "is nix-wasm-hook installed at that path, executable by root, and does \
             /etc/nix/nix-wasm-hook.toml set `machines`?",
        ),
    }
    match version(program) {
        Ok(v) => {
            let ours = env!("CARGO_PKG_VERSION");
            if !v.ends_with(ours) {
                r.add(
                    Status::Warning,
                    format!("the line runs {v}, but this check is nix-wasm-hook {ours}"),
                    format!("point remote-program in {} at the nix-wasm-hook you installed", r.line),
                );
            }
            r.facts.nix_version = Some(v);
        }
        Err(e) => r.add(Status::Warning, format!("`{program} --version` failed: {e:#}"), ""),
    }
    match real {
        None => r.add(
            Status::Unusable,
            format!("builder mode needs the real builders, and {} is not set", nwh_options::MACHINES_OPTION),
            format!(
                "set `machines = \"@/etc/nix/nix-wasm-hook.machines\"` in {} and list the real builders there \
                 (Nix's machines-file syntax)",
                nwh_options::DEFAULT_CONFIG
            ),
        ),
        Some(real) => compare(m, real, &mut r),
    }
    r
}

/// The serve protocol's greeting with `program --serve --write`, started as Nix starts it;
/// then end of input, which a builder answers by exiting 0 — after reading its options and
/// machines, so a builder that cannot read them is found here too.
fn greet(program: &str) -> Result<u64> {
    let words = nwh_machines::program_words(program);
    let (first, leading) = words.split_first().context("an empty remote-program")?;
    let mut child = Command::new(first)
        .args(leading)
        .args(["--serve", "--write"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
    let greeting = nwh_serve::ServeClient::handshake(program, stdout, stdin).map(|c| c.remote_version());
    // The client owned both pipes: dropping it was the end of input.
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut said);
    }
    let status = child.wait()?;
    let said = said.trim();
    let version = greeting.map_err(|e| {
        anyhow::anyhow!("{e}{}", if said.is_empty() { String::new() } else { format!(": {said}") })
    })?;
    anyhow::ensure!(status.success(), "after greeting it stopped ({status}): {said}");
    Ok(version)
}

/// What the program says it is: `nix-wasm-hook 0.1.0`.
fn version(program: &str) -> Result<String> {
    let words = nwh_machines::program_words(program);
    let (first, leading) = words.split_first().context("an empty remote-program")?;
    let out = Command::new(first).args(leading).arg("--version").stdin(Stdio::null()).output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the line promises Nix against what the real builders can do: Nix sends a build here
/// when the line fits it, and the build fails at once when no real builder does; it never
/// sends one the line lacks a system or feature for; and it postpones when the line's slots
/// are taken, looking again only after `build-poll-interval`.
fn compare(line: &Machine, real: &Machines, r: &mut Report) {
    // Behind builder mode, the store Nix builds in is taken to be this machine's own (a line's
    // `remote-store` naming another is not followed here): a real builder in it would wait on
    // the locks Nix holds, as from the hook.
    let here = crate::transfer::local_store::LocalStore::parse("auto").ok();
    let usable: Vec<&Machine> = real
        .machines
        .iter()
        .filter(|m| here.as_ref().is_none_or(|here| target::unsupported(m, here).is_none()))
        .collect();
    if usable.is_empty() {
        r.add(
            Status::Unusable,
            format!(
                "{} names no machine nix-wasm-hook can build on: every build sent here fails",
                nwh_options::MACHINES_OPTION
            ),
            "list the real builders (ssh:// lines) in the file the `machines` option names",
        );
        return;
    }
    let systems: BTreeSet<&String> = usable.iter().flat_map(|m| &m.systems).collect();
    let features: BTreeSet<&String> =
        usable.iter().flat_map(|m| m.supported_features.iter().chain(&m.mandatory_features)).collect();
    let line_features: BTreeSet<&String> =
        line.supported_features.iter().chain(&line.mandatory_features).collect();
    let list = |set: &BTreeSet<&String>| set.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    for s in line.systems.iter().filter(|s| !systems.contains(s)) {
        r.add(
            Status::Warning,
            format!(
                "the line declares system `{s}`, which no real builder builds ({}): such builds fail at once",
                list(&systems)
            ),
            format!("remove `{s}` from column 2 of {}, or add a builder for it", r.line),
        );
    }
    for s in systems.iter().filter(|s| !line.systems.contains(s)) {
        r.add(
            Status::Warning,
            format!("real builders build `{s}`, but the line does not declare it: Nix never sends such builds here"),
            format!("add `{s}` to column 2 of {}", r.line),
        );
    }
    for f in line_features.iter().filter(|f| !features.contains(*f)) {
        r.add(
            Status::Warning,
            format!("the line declares feature `{f}`, which no real builder has ({}): builds requiring it fail at once", list(&features)),
            format!("remove `{f}` from columns 6–7 of {}, or add it to a real builder's line", r.line),
        );
    }
    for f in features.iter().filter(|f| !line_features.contains(*f)) {
        r.add(
            Status::Warning,
            format!("real builders have feature `{f}`, but the line does not declare it: Nix never sends builds requiring it here"),
            format!("add `{f}` to column 6 of {}", r.line),
        );
    }
    let slots: u32 = usable.iter().map(|m| m.max_jobs).sum();
    if line.max_jobs <= slots {
        r.add(
            Status::Warning,
            format!(
                "max-jobs (column 4) is {}, and the real builders have {slots} slots: when {} builds run, Nix \
                 postpones the next and looks again only after build-poll-interval, instead of letting it \
                 wait here for the first free slot",
                line.max_jobs, line.max_jobs
            ),
            format!("set column 4 of {} to {} (four times the real slots)", r.line, 4 * slots.max(1)),
        );
    }
}
