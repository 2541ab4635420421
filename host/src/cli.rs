//! Command line: hook mode (what Nix runs) and the tools for people.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::core::log::{self, Logger};
use nwh_options::Options;

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
    #[command(flatten)]
    pub options: Options,
    /// Serve the serve protocol on stdin and stdout as one builder of Nix's own hook, which
    /// runs `remote-program --serve --write` for an `ssh://localhost?remote-program=…` line.
    #[arg(long)]
    pub serve: bool,
    /// Accepted with --serve, as Nix passes it; this builder always writes.
    #[arg(long, requires = "serve")]
    pub write: bool,
    /// With --serve: the store this builder shares with Nix, which Nix's hook passes for a
    /// line's `remote-store` (default: nix.conf's `store`, else the machine's own).
    #[arg(long, requires = "serve", value_name = "STORE")]
    pub store: Option<String>,
    /// Keep builders' sessions warm for the hook processes (started by a hook, not by people).
    #[arg(long = "warm-sessions", value_name = "DIR", hide = true)]
    pub warm_sessions: Option<PathBuf>,
    /// With --warm-sessions: end after this many milliseconds without a request instead of a
    /// minute (for the tests; a hook never passes it).
    #[arg(long = "warm-idle-ms", value_name = "MS", requires = "warm_sessions", hide = true)]
    pub warm_idle_ms: Option<u64>,
    /// Nix's verbosity (0 error … 7 vomit), which Nix passes as the last argument.
    pub verbosity: Option<u64>,
}

/// The tools for people; without one, the binary is the hook.
#[derive(Debug, Subcommand)]
pub enum Command {
    Replay(crate::tools::replay::Args),
    Simulate(crate::tools::simulate::Args),
    Explain(crate::tools::explain::Args),
    Check(crate::tools::check::Args),
}

pub fn main() -> i32 {
    crate::front_end::fds::protect_inherited();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Replay(args)) => return crate::tools::replay::main(args),
        Some(Command::Simulate(args)) => return crate::tools::simulate::main(args),
        Some(Command::Explain(args)) => return crate::tools::explain::main(args),
        Some(Command::Check(args)) => return crate::tools::check::main(args),
        None => {}
    }
    if let Some(dir) = &cli.warm_sessions {
        let idle = cli.warm_idle_ms.map_or(crate::transfer::warm::IDLE, std::time::Duration::from_millis);
        return match crate::transfer::warm::keep(dir, idle) {
            Ok(()) => 0,
            Err(e) => {
                // Seen by whoever runs it by hand; a hook starts it with stderr closed.
                eprintln!("nix-wasm-hook: {e:#}");
                1
            }
        };
    }
    crate::core::timeline::start();
    // As a builder, stderr is the build log Nix's hook shows as it is: plain lines.
    let logger = Logger::new(!cli.serve, log::level_from_verbosity(cli.verbosity.unwrap_or(3)));
    if let Err(e) = crate::core::stop::on_signals() {
        // Without it a stop signal still ends the process, as a SIGKILL would.
        logger.warn(&format!("nix-wasm-hook: {e:#}"));
    }
    let result = (|| {
        let flags = cli.options.clone();
        flags.check(nwh_options::Spelling::Flag)?;
        let opts = Options::load(cli.config.as_deref())?.overlay(flags);
        if cli.serve {
            crate::front_end::builder_mode::run(&opts, cli.store.as_deref(), &logger)
        } else {
            crate::front_end::hook::run(&opts, &logger)
        }
    })();
    crate::core::timeline::mark("end");
    match result {
        Ok(code) => code,
        Err(e) => {
            // Exit 1, as Nix's own hook exits on an error: Nix counts it a `MiscFailure`.
            logger.failure(&format!("nix-wasm-hook: {e:#}"));
            1
        }
    }
}
