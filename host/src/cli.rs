//! Command line: hook mode (what Nix runs) and the tools for people.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Options;
use crate::log::{self, Logger};

/// A Nix build hook whose choice of build machine is made by a sandboxed WebAssembly policy.
///
/// Nix runs it as `build-hook` with its verbosity as the last argument; put options in
/// /etc/nix/nix-wasm-hook.toml or before that argument (Nix ≥ 2.10 passes the words of
/// `build-hook` after the path there: `--policy /x.wasm 3`).
#[derive(Debug, Parser)]
#[command(name = "nix-wasm-hook", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options file (TOML); absent is fine unless given here.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A policy component to decide instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Fuel a policy may spend per decision.
    #[arg(long, value_name = "N")]
    pub policy_fuel: Option<u64>,
    /// Wall-clock limit per decision, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub policy_timeout_ms: Option<u64>,
    /// Memory a policy may use, in MiB.
    #[arg(long, value_name = "MIB")]
    pub policy_memory_mib: Option<u64>,
    /// Cache directory for compiled policies ("" disables it).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The current-load directory shared with Nix's own hook.
    #[arg(long, value_name = "DIR")]
    pub current_load: Option<PathBuf>,
    /// The hook's own state directory (SSH control sockets).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for a builder's SSH handshake.
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// Connect to the builder before answering `# accept` (true) or after (false).
    #[arg(long, value_name = "BOOL")]
    pub connect_before_accept: Option<bool>,
    /// Milliseconds to wait for a free slot before answering `postpone`.
    #[arg(long, value_name = "MS")]
    pub postpone_wait_ms: Option<u64>,
    /// Append one JSON line per decision to this file, for `replay`.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Size at which the trace moves to PATH.1 (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub trace_max_bytes: Option<u64>,
    /// Builder mode only: the real builders (Nix's `builders` syntax, e.g. `@/etc/nix/nix-wasm-hook.machines`).
    #[arg(long, value_name = "BUILDERS")]
    pub machines: Option<String>,
    /// Serve the serve protocol on stdin and stdout as one builder of Nix's own hook, which
    /// runs `remote-program --serve --write` for an `ssh://localhost?remote-program=…` line.
    #[arg(long)]
    pub serve: bool,
    /// Accepted with --serve, as Nix passes it; this builder always writes.
    #[arg(long, requires = "serve")]
    pub write: bool,
    /// Keep builders' sessions warm for the hook processes (started by a hook, not by people).
    #[arg(long = "warm-sessions", value_name = "DIR", hide = true)]
    pub warm_sessions: Option<PathBuf>,
    /// Nix's verbosity (0 error … 7 vomit), which Nix passes as the last argument.
    pub verbosity: Option<u64>,
}

/// The tools for people; without one, the binary is the hook.
#[derive(Debug, Subcommand)]
pub enum Command {
    Replay(crate::replay::Args),
    Simulate(crate::simulate::Args),
    Explain(crate::explain::Args),
    Check(crate::check::Args),
}

impl Cli {
    fn flags(&self) -> Options {
        Options {
            policy: self.policy.clone(),
            policy_fuel: self.policy_fuel,
            policy_timeout_ms: self.policy_timeout_ms,
            policy_memory_mib: self.policy_memory_mib,
            cache_dir: self.cache_dir.clone(),
            current_load: self.current_load.clone(),
            state_dir: self.state_dir.clone(),
            connect_timeout: self.connect_timeout,
            connect_before_accept: self.connect_before_accept,
            postpone_wait_ms: self.postpone_wait_ms,
            trace: self.trace.clone(),
            trace_max_bytes: self.trace_max_bytes,
            machines: self.machines.clone(),
        }
    }
}

/// Runs one of the offline tools with stdout as its output: its exit status, or `error`
/// after printing the error (`nix-wasm-hook NAME: …`). A closed stdout (`… | head`) is no
/// error.
pub fn tool_main(
    name: &str,
    error: i32,
    run: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<i32>,
) -> i32 {
    match run(&mut std::io::stdout().lock()) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("nix-wasm-hook {name}: {e:#}");
            error
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn main() -> i32 {
    crate::fds::protect_inherited();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Replay(args)) => return crate::replay::main(args),
        Some(Command::Simulate(args)) => return crate::simulate::main(args),
        Some(Command::Explain(args)) => return crate::explain::main(args),
        Some(Command::Check(args)) => return crate::check::main(args),
        None => {}
    }
    if let Some(dir) = &cli.warm_sessions {
        return match crate::transfer::warm::keep(dir) {
            Ok(()) => 0,
            Err(_) => 1,
        };
    }
    crate::timeline::start();
    // As a builder, stderr is the build log Nix's hook shows as it is: plain lines.
    let logger = Logger::new(!cli.serve, log::level_from_verbosity(cli.verbosity.unwrap_or(3)));
    let result = (|| {
        let explicit = cli.config.is_some();
        let path = cli.config.clone().unwrap_or_else(|| crate::hook::default_config().to_path_buf());
        let flags = cli.flags();
        flags.check(crate::config::Spelling::Flag)?;
        let opts = Options::from_file(&path, explicit)?.overlay(flags);
        if cli.serve {
            crate::builder::run(&opts, &logger)
        } else {
            crate::hook::run(&opts, &logger)
        }
    })();
    crate::timeline::mark("end");
    match result {
        Ok(code) => code,
        Err(e) => {
            logger.error(&format!("nix-wasm-hook: {e:#}"));
            1
        }
    }
}
