//! `build-policies` and `check-policies`: the Wasm guests under `policies/`.

use crate::inspect::{self, sha256_hex};
use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The interface every policy component exports: the current contract.
pub const POLICY_EXPORT: &str = "nix-wasm-hook:policy/policy@0.3.0";

/// What a guest exports: the policy interface, except for the default (contract 0.2: it uses
/// none of 0.3's facts) and the guests that test how the host refuses or adapts to other
/// contracts.
fn expected_export(name: &str) -> &'static str {
    match name {
        "default" => "nix-wasm-hook:policy/policy@0.2.0",
        "old-minor" => "nix-wasm-hook:policy/policy@0.1.0",
        "future-major" => "nix-wasm-hook:policy/policy@1.0.0",
        "wrong-world" => "example:other/thing@0.1.0",
        _ => POLICY_EXPORT,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// wasm32-unknown-unknown: a core module that `wit-component` turns into a component.
    Core,
    /// wasm32-wasip2: rustc (wasm-component-ld) already emits a component.
    Wasip2,
}

impl Target {
    fn triple(self) -> &'static str {
        match self {
            Target::Core => "wasm32-unknown-unknown",
            Target::Wasip2 => "wasm32-wasip2",
        }
    }
}

/// What a component must import; checked after every build.
#[derive(Clone, Copy, Debug)]
enum Imports {
    None,
    /// Exactly these names.
    Exactly(&'static [&'static str]),
    /// At least one import, every one from WASI.
    OnlyWasi,
}

struct Guest {
    /// Short name: `policies/{testing,examples}/<name>/` → `tests/fixtures/policies/<name>.wasm`.
    name: &'static str,
    package: &'static str,
    target: Target,
    imports: Imports,
}

impl Guest {
    /// File name cargo gives the cdylib.
    fn artifact(&self) -> String {
        format!("{}.wasm", self.package.replace('-', "_"))
    }

    /// Where the component goes, relative to the repository root.
    fn output(&self) -> String {
        match self.name {
            "default" => "policies/default/default.wasm".to_string(),
            name => format!("tests/fixtures/policies/{name}.wasm"),
        }
    }
}

const fn guest(name: &'static str, package: &'static str, target: Target, imports: Imports) -> Guest {
    Guest { name, package, target, imports }
}

const GUESTS: &[Guest] = &[
    guest("default", "default-policy", Target::Core, Imports::None),
    guest("spin", "test-policy-spin", Target::Core, Imports::None),
    guest("hog", "test-policy-hog", Target::Core, Imports::None),
    guest("trap", "test-policy-trap", Target::Core, Imports::None),
    guest("flood", "test-policy-flood", Target::Core, Imports::None),
    guest("moody", "test-policy-moody", Target::Core, Imports::None),
    guest("phantom", "test-policy-phantom", Target::Core, Imports::None),
    guest("misfit", "test-policy-misfit", Target::Core, Imports::None),
    guest("prefer-last", "test-policy-prefer-last", Target::Core, Imports::None),
    guest("facts", "test-policy-facts", Target::Core, Imports::None),
    guest("fastest-first", "fastest-first-policy", Target::Core, Imports::None),
    guest("snoop", "test-policy-snoop", Target::Wasip2, Imports::OnlyWasi),
    guest("sleep", "test-policy-sleep", Target::Wasip2, Imports::OnlyWasi),
    guest("old-minor", "test-policy-old-minor", Target::Core, Imports::None),
    guest("future-major", "test-policy-future-major", Target::Core, Imports::None),
    guest("no-decide", "test-policy-no-decide", Target::Core, Imports::None),
    guest("wrong-world", "test-policy-wrong-world", Target::Core, Imports::None),
    guest(
        "foreign-import",
        "test-policy-foreign-import",
        Target::Core,
        Imports::Exactly(&["evil:net/socket"]),
    ),
];

pub struct Options {
    pub repo: PathBuf,
    pub target_dir: PathBuf,
}

impl Options {
    pub fn new(target_dir: Option<PathBuf>) -> Result<Options> {
        let repo = repo_root()?;
        // A subdirectory of $CARGO_TARGET_DIR is separate from the outer build (no shared
        // lock), and CI keeps it between runs.
        let target_dir = target_dir
            .or_else(|| std::env::var_os("POLICIES_TARGET_DIR").map(PathBuf::from))
            .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("policies")))
            .unwrap_or_else(|| repo.join("policies/target"));
        std::fs::create_dir_all(&target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
        let target_dir = target_dir.canonicalize()?;
        Ok(Options { repo, target_dir })
    }
}

/// The repository's root: xtask's parent directory.
pub fn repo_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask has no parent directory")?;
    root.canonicalize().with_context(|| format!("resolving {}", root.display()))
}

/// Builds every guest and writes the components into the repository.
pub fn build(opts: &Options) -> Result<()> {
    let built = build_into(opts, &opts.repo, false)?;
    println!("{:<16} {:>8}  {:<64}  path", "policy", "bytes", "sha256");
    for (guest, bytes) in &built {
        println!("{:<16} {:>8}  {}  {}", guest.name, bytes.len(), sha256_hex(bytes), guest.output());
    }
    Ok(())
}

/// Rebuilds every guest into a temporary directory and compares with the committed files.
/// Returns false (after naming each one) when any differs or is missing.
pub fn check(opts: &Options) -> Result<bool> {
    let scratch = tempfile::Builder::new().prefix("xtask-check-policies-").tempdir()?;
    let built = build_into(opts, scratch.path(), true)?;
    let mut ok = true;
    for (guest, fresh) in &built {
        let committed_path = opts.repo.join(guest.output());
        match std::fs::read(&committed_path) {
            Ok(committed) if committed == *fresh => {
                println!("ok       {}  {}", guest.output(), sha256_hex(fresh));
            }
            Ok(committed) => {
                ok = false;
                println!(
                    "DIFFERS  {}: committed {} bytes sha256 {}, fresh build {} bytes sha256 {}",
                    guest.output(),
                    committed.len(),
                    sha256_hex(&committed),
                    fresh.len(),
                    sha256_hex(fresh)
                );
            }
            Err(e) => {
                ok = false;
                println!("MISSING  {}: {e}", guest.output());
            }
        }
    }
    if !ok {
        println!(
            "check-policies: committed policy components are stale; \
             run `cargo run -p xtask -- build-policies` and commit the .wasm files"
        );
    }
    Ok(ok)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// `cargo test --workspace` at the repository root, with `args` appended.
/// `cargo fmt --check` and `cargo clippy -D warnings` over the root workspace (not the guests:
/// reformatting a guest changes its committed .wasm).
pub fn lint(opts: &Options) -> Result<()> {
    for (what, args) in [
        ("cargo fmt --all --check", &["fmt", "--all", "--check"][..]),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            &["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"][..],
        ),
    ] {
        eprintln!("xtask: {what}");
        let status = cargo().current_dir(&opts.repo).args(args).status().context("running cargo")?;
        ensure!(status.success(), "{what} failed: {status}");
    }
    Ok(())
}

pub fn workspace_tests(opts: &Options, args: &[String]) -> Result<()> {
    // No `--include-ignored`: a test is ignored only when this machine cannot run it (the
    // host's build script says what it lacks), and then it is listed as such, with why.
    let args = args.to_vec();
    eprintln!("xtask: cargo test --workspace {}", args.join(" "));
    let status = cargo()
        .current_dir(&opts.repo)
        .args(["test", "--workspace"])
        .args(&args)
        .status()
        .context("running cargo")?;
    ensure!(status.success(), "workspace tests failed: {status}");
    Ok(())
}

/// Builds all guests and writes each component to `out_root/<guest.output>`.
fn build_into(opts: &Options, out_root: &Path, locked: bool) -> Result<Vec<(&'static Guest, Vec<u8>)>> {
    check_guest_list(&opts.repo)?;
    add_targets();
    for target in [Target::Core, Target::Wasip2] {
        let packages: Vec<&str> = GUESTS.iter().filter(|g| g.target == target).map(|g| g.package).collect();
        cargo_build(opts, target, &packages, locked)?;
    }
    let mut built = Vec::new();
    for guest in GUESTS {
        let artifact = opts.target_dir.join(guest.target.triple()).join("release").join(guest.artifact());
        let module = std::fs::read(&artifact).with_context(|| format!("reading {}", artifact.display()))?;
        let component = match guest.target {
            Target::Core => wit_component::ComponentEncoder::default()
                .validate(true)
                .module(&module)
                .with_context(|| format!("{}: reading the core module", guest.name))?
                .encode()
                .with_context(|| format!("{}: making a component", guest.name))?,
            Target::Wasip2 => {
                ensure!(
                    wasmparser::Parser::is_component(&module),
                    "{}: {} is not a component",
                    guest.name,
                    artifact.display()
                );
                module
            }
        };
        verify(guest, &component)?;
        let out = out_root.join(guest.output());
        write_if_changed(&out, &component)?;
        built.push((guest, component));
    }
    Ok(built)
}

/// Every `policies/testing/<name>` directory must be listed in [`GUESTS`].
fn check_guest_list(repo: &Path) -> Result<()> {
    let testing = repo.join("policies/testing");
    for entry in std::fs::read_dir(&testing)? {
        let entry = entry?;
        if !entry.path().join("Cargo.toml").exists() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !GUESTS.iter().any(|g| g.name == name) {
            bail!("policies/testing/{name} is not listed in xtask/src/policies.rs (GUESTS)");
        }
    }
    Ok(())
}

/// `rustup target add` both targets; harmless when installed, skipped without rustup.
fn add_targets() {
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown", "wasm32-wasip2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "xtask: warning: `rustup target add wasm32-unknown-unknown wasm32-wasip2` failed; \
             continuing with the installed targets"
        );
    }
}

/// The `--remap-path-prefix` flags that make the output independent of where the checkout,
/// the cargo home, the toolchain and the target directory are. Later flags win in rustc, so
/// the most specific (the target directory, which may be inside the checkout) comes last.
fn remap_flags(opts: &Options) -> Result<Vec<String>> {
    let mut flags = Vec::new();
    let mut remap = |from: &Path, to: &str| {
        flags.push(format!("--remap-path-prefix={}={to}", from.display()));
    };
    remap(&opts.repo, "/nix-wasm-hook");
    if let Some(cargo_home) = cargo_home() {
        remap(&cargo_home, "/cargo");
        if let Ok(real) = cargo_home.canonicalize() {
            if real != cargo_home {
                remap(&real, "/cargo");
            }
        }
    }
    if let Some(sysroot) = sysroot(&opts.repo) {
        remap(&sysroot, "/rust");
    }
    remap(&opts.target_dir, "/target");
    Ok(flags)
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

fn sysroot(repo: &Path) -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out =
        Command::new(rustc).args(["--print", "sysroot"]).current_dir(repo.join("policies")).output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn cargo_build(opts: &Options, target: Target, packages: &[&str], locked: bool) -> Result<()> {
    let policies = opts.repo.join("policies");
    let mut cmd = cargo();
    cmd.current_dir(&policies)
        .args(["build", "--release", "--target", target.triple()])
        .arg("--manifest-path")
        .arg(policies.join("Cargo.toml"));
    if locked {
        cmd.arg("--locked");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    // CARGO_ENCODED_RUSTFLAGS (0x1f-separated) survives paths with spaces; it takes
    // precedence over RUSTFLAGS, which is removed so no outside flag leaks in.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", remap_flags(opts)?.join("\u{1f}"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &opts.target_dir);
    eprintln!(
        "xtask: building {} for {} (target dir {})",
        packages.join(", "),
        target.triple(),
        opts.target_dir.display()
    );
    let status = cmd.status().context("running cargo")?;
    ensure!(status.success(), "cargo build for {} failed: {status}", target.triple());
    Ok(())
}

/// Checks that a component exports the policy interface and imports what it should.
fn verify(guest: &Guest, component: &[u8]) -> Result<()> {
    let summary =
        inspect::summarize(component).with_context(|| format!("{}: reading the component", guest.name))?;
    ensure!(summary.component, "{}: not a component", guest.name);
    let exports = summary.export_names();
    let expected = expected_export(guest.name);
    ensure!(exports == [expected], "{}: exports {exports:?}, expected exactly [{expected:?}]", guest.name);
    let imports = summary.import_names();
    match guest.imports {
        Imports::None => {
            ensure!(imports.is_empty(), "{}: must import nothing, imports {imports:?}", guest.name)
        }
        Imports::Exactly(expected) => {
            ensure!(imports == expected, "{}: imports {imports:?}, expected {expected:?}", guest.name)
        }
        Imports::OnlyWasi => ensure!(
            !imports.is_empty() && imports.iter().all(|i| i.starts_with("wasi:")),
            "{}: must import only (and some) WASI, imports {imports:?}",
            guest.name
        ),
    }
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
