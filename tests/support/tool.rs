//! Running the binary's offline tools (`replay`, `simulate`) as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::fake_parent::shared_cache;

/// A policy component that `cargo xtask test` builds and names in `env` (componentize-py's
/// and componentize-js's output is not reproducible, so it is not committed). The tests that
/// use one are ignored when it is not there (the host's build script says so), so its absence
/// here is a failure.
fn built_policy(env: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        panic!("${env} is not set: `cargo xtask test` builds that policy and names it there")
    });
    assert!(path.is_file(), "${env} names {}, which does not exist", path.display());
    path
}

/// The Python policy (policies/python).
pub fn python_policy() -> PathBuf {
    built_policy("NWH_PYTHON_POLICY")
}

/// The JavaScript policy (policies/js).
pub fn js_policy() -> PathBuf {
    built_policy("NWH_JS_POLICY")
}

/// A component in tests/fixtures/policies, by name; `python` and `js` are the policies
/// `cargo xtask test` builds.
pub fn try_policy_fixture(name: &str) -> String {
    match name {
        "python" => python_policy().display().to_string(),
        "js" => js_policy().display().to_string(),
        _ => policy_fixture(name),
    }
}

/// A component in tests/fixtures/policies, by name.
pub fn policy_fixture(name: &str) -> String {
    policy_fixture_path(name).display().to_string()
}

/// [`policy_fixture`] as a path (canonical: no `..` in messages that quote it).
pub fn policy_fixture_path(name: &str) -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies").join(format!("{name}.wasm"));
    path.canonicalize().unwrap_or(path)
}

/// `nix-wasm-hook SUBCOMMAND --config C ARGS` in the repository's root (as the README runs
/// it), where C points at the tests' shared policy cache (so a policy is compiled once per
/// test run).
pub fn run_tool(subcommand: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hook.toml");
    std::fs::write(&config, format!("cache-dir = {:?}\n", shared_cache().display().to_string())).unwrap();
    Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg(subcommand)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap()
}

/// `nix-wasm-hook check` as Nix's daemon would meet it: cwd `/`, an empty nix.conf directory
/// (so only `builders` counts), an options file holding `options`, and `SUDO_USER` as given.
pub fn run_check(options: &str, builders: &str, extra: &[&str], sudo_user: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hook.toml");
    std::fs::write(&config, options).unwrap();
    Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .current_dir("/")
        .env_remove("NIX_CONFIG")
        .env_remove("NIX_REMOTE_SYSTEMS")
        .env("NIX_CONF_DIR", dir.path())
        .env("SUDO_USER", sudo_user.unwrap_or(""))
        .args(["check", "--config"])
        .arg(&config)
        .args(["--builders", builders])
        .args(extra)
        .output()
        .unwrap()
}

/// The report `check` gave on the builder whose heading contains `tag`, heading included.
pub fn check_report(text: &str, tag: &str) -> String {
    let mut lines = text.lines().skip_while(|l| !l.contains(tag));
    let mut s: Vec<&str> = lines.next().into_iter().collect();
    s.extend(lines.take_while(|l| l.starts_with("          ")));
    s.join("\n")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
