//! `build-other-policies`: the policies written in other languages, built from their sources
//! in `policies/python` and `policies/c` with tools from PyPI, pinned, in a venv under the
//! target directory (never in the repository):
//!
//! * Python: componentize-py. Its output is **not** byte-reproducible (two builds of the same
//!   input differ: the interpreter snapshot holds randomised state; componentize-py issue
//!   #247), so it is not committed: it is built into the target directory and the tests find
//!   it through `$NWH_PYTHON_POLICY`, which `cargo xtask test` sets.
//! * JavaScript: componentize-js (from npm, pinned, installed into `<work>/js-tools`). Not
//!   reproducible either (the engine snapshot differs from build to build), so built like the
//!   Python one and found through `$NWH_JS_POLICY`.
//! * C: bindings from wit-bindgen's C generator (the `wit-bindgen-c` crate, as a library),
//!   compiled by `zig cc` (the `ziglang` wheel) for wasm32-wasi as a reactor, made a component
//!   with `wit-component`. The bytes are reproducible, so `tests/fixtures/policies/c.wasm` is
//!   committed and `check-policies` compares it with a fresh build.

use crate::inspect::{self, sha256_hex};
use crate::policies::{Options, POLICY_EXPORT};
use anyhow::{ensure, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The pinned tools, installed with pip into `<work>/venv`.
pub const REQUIREMENTS: &[&str] = &["componentize-py==0.25.1", "ziglang==0.17.1"];

/// The world both policies target (wit/policy.wit).
const WORLD: &str = "policy-world";

/// The committed C component, relative to the repository root.
pub const C_OUTPUT: &str = "tests/fixtures/policies/c.wasm";

/// The environment variable that tells the tests where the Python component is.
pub const PYTHON_ENV: &str = "NWH_PYTHON_POLICY";

/// The JavaScript toolchain, from npm.
pub const JS_REQUIREMENT: &str = "@bytecodealliance/componentize-js@0.18.5";

/// The environment variable that tells the tests where the JavaScript component is.
pub const JS_ENV: &str = "NWH_JS_POLICY";

/// Working directory for the venv, zig's caches and the Python output:
/// `<policies target dir>/other`.
fn work_dir(opts: &Options) -> PathBuf {
    opts.target_dir.join("other")
}

/// Where the Python component is built.
pub fn python_output(opts: &Options) -> PathBuf {
    work_dir(opts).join("python/python.wasm")
}

/// The venv with the pinned tools.
pub struct Tools {
    python: PathBuf,
    componentize_py: PathBuf,
    work: PathBuf,
}

/// Creates (or reuses) the venv with [`REQUIREMENTS`]. A venv is reused only when it was
/// made for exactly these pins; CI keeps it between runs with the target directory.
pub fn tools(opts: &Options) -> Result<Tools> {
    let work = work_dir(opts);
    let venv = work.join("venv");
    let stamp = venv.join("nix-wasm-hook-requirements.txt");
    let wanted = REQUIREMENTS.join("\n") + "\n";
    let tools = Tools {
        python: venv.join("bin/python"),
        componentize_py: venv.join("bin/componentize-py"),
        work: work.clone(),
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && tools.python.exists() {
        return Ok(tools);
    }
    let started = Instant::now();
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| OsString::from("python3"));
    eprintln!("xtask: creating a venv with {} in {}", REQUIREMENTS.join(", "), venv.display());
    std::fs::create_dir_all(&work)?;
    run(Command::new(&python).args(["-m", "venv", "--clear"]).arg(&venv), "python3 -m venv")
        .context("a Python 3 with the venv module is needed (Debian: python3-venv)")?;
    run(
        Command::new(&tools.python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"])
            .args(REQUIREMENTS),
        "pip install",
    )?;
    std::fs::write(&stamp, wanted)?;
    eprintln!("xtask: venv ready in {:.1} s", started.elapsed().as_secs_f64());
    Ok(tools)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(status.success(), "{what} failed: {status}");
    Ok(())
}

/// Builds the C policy and returns the component's bytes (not written anywhere).
pub fn build_c(opts: &Options, tools: &Tools) -> Result<Vec<u8>> {
    // A fresh directory each time, and only relative paths on zig's command line, so that
    // nothing about where the build ran can reach the output.
    std::fs::create_dir_all(&tools.work)?;
    let mut scratch = tempfile::Builder::new().prefix("c-").tempdir_in(&tools.work)?;
    if std::env::var_os("XTASK_KEEP_SCRATCH").is_some() {
        scratch.disable_cleanup(true);
        eprintln!("xtask: keeping the C build directory {}", scratch.path().display());
    }
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("gen"))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let generated = c_bindings(&opts.repo.join("wit"), &dir.join("gen"))?;
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(opts.repo.join("policies/c"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".c") || name.ends_with(".h") {
            std::fs::copy(&path, dir.join("src").join(&name))?;
            if name.ends_with(".c") {
                sources.push(format!("src/{name}"));
            }
        }
    }
    sources.sort();
    ensure!(!sources.is_empty(), "policies/c has no .c file");
    let zig_cache = tools.work.join("zig-cache");
    let mut cmd = Command::new(&tools.python);
    cmd.current_dir(dir)
        .args(["-m", "ziglang", "cc", "--target=wasm32-wasi", "-mexec-model=reactor"])
        .args(["-Os", "-g0", "-std=c11", "-Wall", "-Wextra", "-Igen", "-Isrc", "-o", "core.wasm"])
        .args(&sources)
        .args(&generated)
        .env("ZIG_GLOBAL_CACHE_DIR", zig_cache.join("global"))
        .env("ZIG_LOCAL_CACHE_DIR", zig_cache.join("local"));
    let started = Instant::now();
    run(&mut cmd, "zig cc")?;
    eprintln!("xtask: zig cc took {:.1} s", started.elapsed().as_secs_f64());
    let module = std::fs::read(dir.join("core.wasm"))?;
    let core = inspect::summarize(&module).context("reading the C core module")?;
    ensure!(core.imports.is_empty(), "the C core module imports {:?}; it must import nothing", core.imports);
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("c: reading the core module")?
        .encode()
        .context("c: making a component")?;
    verify("c", &component, false)?;
    Ok(component)
}

/// `wit-bindgen c` for [`WORLD`]: writes the generated files into `out` and returns the
/// names, relative to `out`'s parent, of those to compile and link (`.c` and the `.o` that
/// carries the component type).
fn c_bindings(wit: &Path, out: &Path) -> Result<Vec<String>> {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(wit).with_context(|| format!("reading {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    let mut link = Vec::new();
    for (name, contents) in files.iter() {
        std::fs::write(out.join(name), contents)?;
        if name.ends_with(".c") || name.ends_with(".o") {
            link.push(format!("gen/{name}"));
        }
    }
    link.sort();
    Ok(link)
}

/// Builds the Python policy into [`python_output`] unless its inputs (sources, wit/, tool
/// pins) are unchanged since the last build. Returns the path and whether it was rebuilt.
pub fn build_python(opts: &Options, tools: &Tools) -> Result<(PathBuf, bool)> {
    let out = python_output(opts);
    let dir = out.parent().unwrap().to_path_buf();
    let stamp = dir.join("inputs.sha256");
    let key = inputs_key(&opts.repo, &REQUIREMENTS.join("\n"), &[("policies/python", "py"), ("wit", "wit")])?;
    if up_to_date(&out, &stamp, &key) {
        return Ok((out, false));
    }
    let sources = files_with(&opts.repo.join("policies/python"), "py")?;
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    std::fs::create_dir_all(&src)?;
    for path in &sources {
        std::fs::copy(path, src.join(path.file_name().unwrap()))?;
    }
    let tmp = dir.join("python.wasm.tmp");
    let started = Instant::now();
    run(
        Command::new(&tools.componentize_py)
            .current_dir(&dir)
            .arg("-q")
            .arg("-d")
            .arg(opts.repo.join("wit"))
            .args(["-w", WORLD, "componentize", "-p", "src", "app", "-o"])
            .arg(&tmp)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYTHONPATH"),
        "componentize-py",
    )?;
    eprintln!("xtask: componentize-py took {:.1} s", started.elapsed().as_secs_f64());
    let component = std::fs::read(&tmp)?;
    verify("python", &component, true)?;
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&stamp, format!("{key}\n"))?;
    Ok((out, true))
}

/// Builds the JavaScript policy into `<work>/js/js.wasm` unless its inputs (sources, wit/,
/// the pin) are unchanged. componentize-js comes from npm, pinned, into `<work>/js-tools`.
pub fn build_js(opts: &Options) -> Result<PathBuf> {
    let work = work_dir(opts);
    let tools = work.join("js-tools");
    let stamp = tools.join("nix-wasm-hook-requirement.txt");
    let bin = tools.join("node_modules/.bin/componentize-js");
    if !(bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == JS_REQUIREMENT)) {
        let started = Instant::now();
        std::fs::create_dir_all(&tools)?;
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&tools)
                .arg(JS_REQUIREMENT),
            "npm install",
        )
        .context("Node.js with npm is needed for the JavaScript policy (Debian: nodejs npm)")?;
        std::fs::write(&stamp, format!("{JS_REQUIREMENT}\n"))?;
        eprintln!("xtask: {JS_REQUIREMENT} installed in {:.1} s", started.elapsed().as_secs_f64());
    }
    let out = work.join("js/js.wasm");
    let dir = out.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let out_stamp = dir.join("inputs.sha256");
    let key = inputs_key(&opts.repo, JS_REQUIREMENT, &[("policies/js", "js"), ("wit", "wit")])?;
    if up_to_date(&out, &out_stamp, &key) {
        return Ok(out);
    }
    let tmp = dir.join("js.wasm.tmp");
    let started = Instant::now();
    // Relative paths from the sources' directory: componentize-js resolves imports (`./logic.js`)
    // only below its working directory. No HTTP: a policy has no network, and the host refuses
    // a component that imports wasi:http.
    run(
        Command::new(&bin)
            .current_dir(opts.repo.join("policies/js"))
            .args(["--wit", "../../wit", "-n", WORLD, "-d", "http", "-d", "fetch-event", "-o"])
            .arg(&tmp)
            .arg("app.js"),
        "componentize-js",
    )?;
    eprintln!("xtask: componentize-js took {:.1} s", started.elapsed().as_secs_f64());
    let component = std::fs::read(&tmp)?;
    verify("js", &component, true)?;
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&out_stamp, format!("{key}\n"))?;
    Ok(out)
}

/// The hash of what a non-reproducible build is made from: the tool pins, then each source
/// file (its path relative to the repository, a NUL, its bytes) of the `(dir, extension)` sets.
fn inputs_key(repo: &Path, pins: &str, sources: &[(&str, &str)]) -> Result<String> {
    let mut inputs = pins.as_bytes().to_vec();
    for (base, ext) in sources {
        for path in files_with(&repo.join(base), ext)? {
            inputs.extend(path.strip_prefix(repo)?.to_string_lossy().as_bytes());
            inputs.push(0);
            inputs.extend(std::fs::read(&path)?);
        }
    }
    Ok(sha256_hex(&inputs))
}

/// `out` exists and was built from the inputs whose key `stamp` holds.
fn up_to_date(out: &Path, stamp: &Path, key: &str) -> bool {
    out.exists() && std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == key)
}

/// The files directly in `dir` whose name ends in `.ext`, sorted.
fn files_with(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks that a component exports the policy interface and imports nothing (C) or only
/// WASI (Python).
fn verify(name: &str, component: &[u8], wasi: bool) -> Result<()> {
    let summary = inspect::summarize(component).with_context(|| format!("{name}: reading the component"))?;
    ensure!(summary.component, "{name}: not a component");
    let mut exports = summary.export_names();
    if wasi {
        // componentize-py adds its own `exports` interface (`init`, called while it builds
        // the interpreter snapshot); the host ignores exports it does not know.
        exports.retain(|e| *e != "exports");
    }
    ensure!(exports == [POLICY_EXPORT], "{name}: exports {exports:?}, expected [{POLICY_EXPORT:?}]");
    let imports = summary.import_names();
    if wasi {
        ensure!(
            !imports.is_empty() && imports.iter().all(|i| i.starts_with("wasi:")),
            "{name}: must import only (and some) WASI, imports {imports:?}"
        );
    } else {
        ensure!(imports.is_empty(), "{name}: must import nothing, imports {imports:?}");
    }
    Ok(())
}

/// `build-other-policies`: both policies; the C component is written into the repository.
pub fn build(opts: &Options) -> Result<()> {
    let tools = tools(opts)?;
    let c = build_c(opts, &tools)?;
    write_if_changed(&opts.repo.join(C_OUTPUT), &c)?;
    let (python, _) = build_python(opts, &tools)?;
    let js = build_js(opts)?;
    println!("{:<16} {:>8}  {:<64}  path", "policy", "bytes", "sha256");
    println!("{:<16} {:>8}  {}  {}", "c", c.len(), sha256_hex(&c), C_OUTPUT);
    for (name, path) in [("python", &python), ("js", &js)] {
        let bytes = std::fs::read(path)?;
        println!("{:<16} {:>8}  {}  {}", name, bytes.len(), sha256_hex(&bytes), path.display());
    }
    Ok(())
}

/// Rebuilds the C policy and compares it with the committed file; false (after saying so)
/// when it differs or is missing. The Python policy is not committed, so not compared.
pub fn check(opts: &Options) -> Result<bool> {
    let tools = tools(opts)?;
    let fresh = build_c(opts, &tools)?;
    match std::fs::read(opts.repo.join(C_OUTPUT)) {
        Ok(committed) if committed == fresh => {
            println!("ok       {C_OUTPUT}  {}", sha256_hex(&fresh));
            Ok(true)
        }
        Ok(committed) => {
            println!(
                "DIFFERS  {C_OUTPUT}: committed {} bytes sha256 {}, fresh build {} bytes sha256 {}\n\
                 check-policies: run `cargo xtask build-other-policies` and commit {C_OUTPUT}",
                committed.len(),
                sha256_hex(&committed),
                fresh.len(),
                sha256_hex(&fresh)
            );
            Ok(false)
        }
        Err(e) => {
            println!("MISSING  {C_OUTPUT}: {e}");
            Ok(false)
        }
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
