//! Developer tasks for nix-wasm-hook. Run `cargo run -p xtask -- help`.

mod fuzz;
mod inspect;
mod other_policies;
mod policies;
mod setup;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
usage: cargo run -p xtask -- <command> [options]

commands:
  build-policies [--target-dir DIR]
      Build every policy guest in policies/ (release, path prefixes remapped so the bytes do
      not depend on the machine or the checkout), turn wasm32-unknown-unknown core modules
      into components, and write policies/default/default.wasm and
      tests/fixtures/policies/<name>.wasm. Then check each component's imports and exports.
  build-other-policies [--target-dir DIR]
      Build the policies in other languages: policies/c (wit-bindgen's C generator, zig cc)
      into tests/fixtures/policies/c.wasm, policies/python (componentize-py) into
      DIR/other/python/python.wasm and policies/js (componentize-js) into DIR/other/js/js.wasm
      (these two not committed: their output is not reproducible). The tools are installed,
      pinned, with pip into DIR/other/venv and with npm into DIR/other/js-tools on first use.
  check-policies [--target-dir DIR]
      Rebuild every guest (the C policy too) into a temporary directory and fail (exit 1),
      naming the files, if any committed .wasm differs from the fresh build or is missing.
  fuzz [--seconds N] [--target NAME]
      Build the cargo-fuzz targets in fuzz/ (installing the pinned cargo-fuzz under
      $CARGO_TARGET_DIR/fuzz first if needed), seed their corpora from the tests' captures and
      fixtures, and run each target (or only NAME) for N seconds (default 20). Exits 1,
      printing each reproducer and the command that replays it, if a target crashed.
      See docs/fuzzing.md.
  inspect [--wit] FILE...
      Print size, sha256, kind, and the top-level imports and exports of Wasm files;
      --wit also prints the WIT world a component implements.
  test [--target-dir DIR] [-- ARGS...]
      The project's test command (CI runs it; alias `cargo xtask test`). First its set-up on
      a fresh Debian machine: as root, the Debian packages the tests need when missing (Nix,
      sshd, debootstrap, busybox-static, Python, Node), and the root file systems of Nix 2.26
      and 2.34 (once, outside the checkout); the wasm targets, clippy and rustfmt. Then
      check-policies, the Python and JavaScript policies (rebuilt only when their inputs
      changed), `cargo fmt --check` and `cargo clippy -D warnings` at the root, `cargo test
      --workspace ARGS...` at the root with $NWH_PYTHON_POLICY and $NWH_JS_POLICY naming
      them (the tests that cannot run here are listed as ignored, with the reason), and `fuzz` with its defaults. Stops at the first failure. Without
      $CARGO_TARGET_DIR the builds go to ~/.cache/nix-wasm-hook/target, reused by every
      checkout on the machine.

The guests' cargo target directory is DIR, else $POLICIES_TARGET_DIR, else
$CARGO_TARGET_DIR/policies, else policies/target.
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{HELP}");
        return Ok(ExitCode::from(2));
    };
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "build-policies" => {
            let opts = policies::Options::new(target_dir_arg(&rest)?)?;
            policies::build(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        "build-other-policies" => {
            let opts = policies::Options::new(target_dir_arg(&rest)?)?;
            other_policies::build(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        "check-policies" => {
            let opts = policies::Options::new(target_dir_arg(&rest)?)?;
            let rust = policies::check(&opts)?;
            let other = other_policies::check(&opts)?;
            Ok(if rust && other { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        "test" => {
            let (opts_args, cargo_args) = match rest.iter().position(|a| a == "--") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&rest[..], &[][..]),
            };
            if std::env::var_os("CARGO_TARGET_DIR").is_none() {
                if let Some(home) = std::env::var_os("HOME") {
                    std::env::set_var(
                        "CARGO_TARGET_DIR",
                        PathBuf::from(home).join(".cache/nix-wasm-hook/target"),
                    );
                }
            }
            // In CI the host's build script then requires what the set-up installs.
            std::env::set_var("NWH_TEST_COMMAND", "1");
            let opts = policies::Options::new(target_dir_arg(opts_args)?)?;
            setup::run(&opts.repo)?;
            if !(policies::check(&opts)? & other_policies::check(&opts)?) {
                return Ok(ExitCode::FAILURE);
            }
            let tools = other_policies::tools(&opts)?;
            let (python, _) = other_policies::build_python(&opts, &tools)?;
            // The tests read them from the environment, and the host's build script marks the
            // tests that need them (so set before the first build, clippy's).
            std::env::set_var(other_policies::PYTHON_ENV, &python);
            std::env::set_var(other_policies::JS_ENV, other_policies::build_js(&opts)?);
            policies::lint(&opts)?;
            policies::workspace_tests(&opts, cargo_args)?;
            // Last: bounded (about three minutes warm), and a crash it finds is best read
            // once everything else is known to pass.
            if !fuzz::run(&opts.repo, &fuzz::Options::parse(&[])?)? {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        "fuzz" => {
            let opts = fuzz::Options::parse(&rest)?;
            Ok(if fuzz::run(&policies::repo_root()?, &opts)? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        "inspect" => {
            let wit = rest.iter().any(|a| a == "--wit");
            let files: Vec<&String> = rest.iter().filter(|a| *a != "--wit").collect();
            if files.is_empty() {
                bail!("inspect: name at least one .wasm file");
            }
            for file in files {
                inspect::print(&PathBuf::from(file), wit).with_context(|| format!("inspecting {file}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{HELP}");
            Ok(ExitCode::from(2))
        }
    }
}

fn target_dir_arg(rest: &[String]) -> Result<Option<PathBuf>> {
    let mut dir = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--target-dir" {
            dir = Some(PathBuf::from(it.next().context("--target-dir needs a directory")?));
        } else if let Some(d) = a.strip_prefix("--target-dir=") {
            dir = Some(PathBuf::from(d));
        } else {
            bail!("unknown option `{a}`");
        }
    }
    Ok(dir)
}
