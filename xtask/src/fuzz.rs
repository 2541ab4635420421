//! `fuzz`: the libFuzzer targets in `fuzz/` (docs/fuzzing.md), each run for a bounded time.
//!
//! The machine has a stable toolchain only. cargo fuzz passes nightly-only flags
//! (`-Cpasses=sancov-module`, `-Zsanitizer`), which stable rustc accepts with
//! `RUSTC_BOOTSTRAP=1`; set only for these builds, so nothing else in the project depends on
//! unstable features. The project's code is safe Rust (`unsafe_code = "deny"`), so the
//! targets are built without a sanitizer: a panic is what the fuzzer looks for, and an
//! uninstrumented build is several times faster to make and to run.
//!
//! Everything goes under one work directory, outside the repository and kept between CI runs:
//! the pinned cargo-fuzz, the instrumented build, the corpora (which grow from run to run)
//! and the crash artifacts.

use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The pinned cargo-fuzz.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `--seconds` is not given: eleven targets stay near four minutes.
pub const DEFAULT_SECONDS: u64 = 20;

/// Every target in fuzz/fuzz_targets (checked against the directory on each run).
pub const TARGETS: &[&str] = &[
    "machines",
    "nixconf",
    "drv",
    "nar",
    "nar_restore",
    "serve_client",
    "serve_server",
    "daemon_client",
    "hook_wire",
    "options",
    "trace",
];

/// Where seeds come from: the real captures and fixtures of the repository's tests, read in
/// place at run time (nothing large is copied into fuzz/). Every file under `dir` whose name
/// ends with `suffix` becomes one seed per prefix, the prefix put in front of its bytes.
struct Seeds {
    target: &'static str,
    dir: &'static str,
    suffix: &'static str,
    /// The protocol clients' inputs start with a script of operations and a `\n` (see
    /// fuzz/src/lib.rs): the operations the captured session performed, from the fixtures'
    /// READMEs. Where the order differs between versions, each candidate is a seed.
    prefixes: &'static [&'static str],
}

const fn seeds(target: &'static str, dir: &'static str, suffix: &'static str) -> Seeds {
    Seeds { target, dir, suffix, prefixes: &[""] }
}

const SEEDS: &[Seeds] = &[
    seeds("machines", "crates/machines/tests/fixtures", ".machines"),
    seeds("nixconf", "crates/nixconf/tests/fixtures", ""),
    seeds("drv", "crates/drv/tests/fixtures", ".drv"),
    seeds("drv", "crates/serve/tests/fixtures", ".drv"),
    seeds("nar", "crates/nar/tests/fixtures", ".nar"),
    seeds("nar", "crates/nar/tests/fixtures", ".export"),
    seeds("nar_restore", "crates/nar/tests/fixtures", ".nar"),
    // crates/serve/tests/fixtures/localhost/README.md: session 0 built `dep`, session 1 `top`
    // (with an upload, and on newer Nix one more QueryPathInfos first).
    Seeds {
        target: "serve_client",
        dir: "crates/serve/tests/fixtures",
        suffix: "session0.server.bin",
        prefixes: &["VBID\n"],
    },
    Seeds {
        target: "serve_client",
        dir: "crates/serve/tests/fixtures",
        suffix: "session1.server.bin",
        prefixes: &["VABIIDD\n", "VIABIIDD\n"],
    },
    Seeds {
        target: "serve_client",
        dir: "crates/serve/tests/fixtures/nix-2.8",
        suffix: ".server.bin",
        prefixes: &["VBID\n", "VABIIDD\n"],
    },
    seeds("serve_server", "crates/serve/tests/fixtures", ".client.bin"),
    // crates/daemon/tests/fixtures/README.md; untrusted, the .drv closure goes up first and
    // BuildPathsWithResults replaces BuildDerivation.
    Seeds {
        target: "daemon_client",
        dir: "crates/daemon/tests/fixtures",
        suffix: "session0.server.bin",
        prefixes: &["VMBIN\n", "VMVMWIN\n", "VVMMWIN\n"],
    },
    Seeds {
        target: "daemon_client",
        dir: "crates/daemon/tests/fixtures",
        suffix: "session1.server.bin",
        prefixes: &["VMBIINN\n", "VMVMWIINN\n", "VVMMWIINN\n"],
    },
    seeds("hook_wire", "tests/fixtures/captures", ".bin"),
    seeds("hook_wire", "crates/wire/tests/fixtures", ".stdin.bin"),
    seeds("options", "crates/options/tests/fixtures", ".toml"),
    seeds("trace", "tests/fixtures/traces", ".jsonl"),
];

pub struct Options {
    pub seconds: u64,
    /// One target, or all of them.
    pub target: Option<String>,
}

impl Options {
    /// `[--seconds N] [--target NAME]`.
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options { seconds: DEFAULT_SECONDS, target: None };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            let mut value = || {
                inline.clone().or_else(|| it.next().cloned()).with_context(|| format!("{name} needs a value"))
            };
            match name {
                "--seconds" => {
                    let v = value()?;
                    opts.seconds = v.parse().with_context(|| format!("--seconds: '{v}' is not a number"))?;
                    ensure!(opts.seconds > 0, "--seconds must be at least 1");
                }
                "--target" => {
                    let v = value()?;
                    ensure!(
                        TARGETS.contains(&v.as_str()),
                        "unknown fuzz target '{v}' (targets: {})",
                        TARGETS.join(", ")
                    );
                    opts.target = Some(v);
                }
                _ => bail!("unknown option `{a}`"),
            }
        }
        Ok(opts)
    }
}

/// What one target's run came to, from libFuzzer's final lines.
struct Outcome {
    target: &'static str,
    seconds: f64,
    runs: Option<u64>,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

/// Installs, builds, seeds and runs; false (after printing each reproducer) when a target
/// found a crash.
pub fn run(repo: &Path, opts: &Options) -> Result<bool> {
    check_target_list(repo)?;
    let work = work_dir(repo)?;
    let cargo_fuzz = install(&work)?;
    let targets: Vec<&'static str> = match &opts.target {
        Some(t) => TARGETS.iter().copied().filter(|n| n == t).collect(),
        None => TARGETS.to_vec(),
    };
    build(repo, &work, &cargo_fuzz, opts.target.as_deref())?;
    let binaries = work.join("build").join(host_triple()?).join("release");
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = work.join("corpus").join(target);
        let seeded = seed(repo, target, &corpus)?;
        eprintln!(
            "xtask: fuzz {target} for {} s ({seeded} seeds, corpus {})",
            opts.seconds,
            corpus.display()
        );
        outcomes.push(run_target(&work, &binaries, target, &corpus, opts.seconds)?);
    }

    println!("{:<14} {:>8} {:>12} {:>8} {:>8}", "target", "seconds", "execs", "corpus", "crashes");
    for o in &outcomes {
        let runs = o.runs.map_or("?".to_string(), |r| r.to_string());
        println!("{:<14} {:>8.0} {:>12} {:>8} {:>8}", o.target, o.seconds, runs, o.corpus, o.crashes.len());
    }
    let mut ok = true;
    for o in outcomes.iter().filter(|o| !o.crashes.is_empty()) {
        ok = false;
        for crash in &o.crashes {
            println!("CRASH    {}: {}", o.target, crash.display());
            println!(
                "         reproduce: RUSTC_BOOTSTRAP=1 {} fuzz run --sanitizer none --fuzz-dir {} --target-dir {} {} {}",
                cargo_fuzz.display(),
                repo.join("fuzz").display(),
                work.join("build").display(),
                o.target,
                crash.display()
            );
        }
    }
    Ok(ok)
}

/// `$CARGO_TARGET_DIR/fuzz`, else `target/fuzz` in the repository (ignored by git).
fn work_dir(repo: &Path) -> Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("fuzz"))
        .unwrap_or_else(|| repo.join("target/fuzz"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))
}

/// Every `fuzz/fuzz_targets/<name>.rs` must be in [`TARGETS`], or CI would silently skip it.
fn check_target_list(repo: &Path) -> Result<()> {
    let dir = repo.join("fuzz/fuzz_targets");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(target) = name.strip_suffix(".rs") {
            ensure!(
                TARGETS.contains(&target),
                "fuzz/fuzz_targets/{name} is not listed in xtask/src/fuzz.rs (TARGETS)"
            );
        }
    }
    Ok(())
}

/// The pinned cargo-fuzz, installed under the work directory on first use (the cold install
/// compiles it: about half a minute on 2 cores). Reinstalled when the pin changes.
fn install(work: &Path) -> Result<PathBuf> {
    let root = work.join("tools");
    let bin = root.join("bin/cargo-fuzz");
    let installed = Command::new(&bin).arg("--version").output();
    if matches!(&installed, Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))
    {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", root.display());
    let started = Instant::now();
    let status = cargo()
        .args(["install", "--locked", "--force", "--version", CARGO_FUZZ_VERSION, "--root"])
        .arg(&root)
        .arg("cargo-fuzz")
        // Its own build must not land in (or lock) the project's target directory.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo install")?;
    ensure!(status.success(), "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} failed: {status}");
    eprintln!("xtask: cargo-fuzz installed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(bin)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// `cargo fuzz build`, run as cargo runs its subcommands (`cargo-fuzz fuzz …`), so that the
/// installed binary need not be on PATH.
fn build(repo: &Path, work: &Path, cargo_fuzz: &Path, target: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(repo)
        .env("RUSTC_BOOTSTRAP", "1")
        // cargo fuzz sets its own flags; outside ones would change (and rebuild) everything.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .args(["fuzz", "build", "--sanitizer", "none", "--fuzz-dir"])
        .arg(repo.join("fuzz"))
        .arg("--target-dir")
        .arg(work.join("build"));
    if let Some(t) = target {
        cmd.arg(t);
    }
    eprintln!("xtask: cargo fuzz build (target dir {})", work.join("build").display());
    let status = cmd.status().context("running cargo fuzz build")?;
    ensure!(status.success(), "cargo fuzz build failed: {status}");
    eprintln!("xtask: fuzz targets built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `rustc -vV`'s host line: cargo fuzz builds for it, under `<target dir>/<triple>/release`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(rustc).arg("-vV").output().context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host =
        text.lines().find_map(|l| l.strip_prefix("host: ")).context("rustc -vV printed no host line")?;
    Ok(host.trim().to_string())
}

/// Adds the target's seeds to its corpus (named by their sha256, so adding twice is harmless):
/// those of [`SEEDS`] and the hand-made ones in `fuzz/seeds/<target>/`. Returns how many.
fn seed(repo: &Path, target: &str, corpus: &Path) -> Result<usize> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut count = 0;
    let mut add = |bytes: Vec<u8>| -> Result<()> {
        let name = crate::inspect::sha256_hex(&bytes);
        let path = corpus.join(name);
        if !path.exists() {
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        count += 1;
        Ok(())
    };
    for s in SEEDS.iter().filter(|s| s.target == target) {
        let dir = repo.join(s.dir);
        for file in files_under(&dir)? {
            if !file.file_name().is_some_and(|n| n.to_string_lossy().ends_with(s.suffix)) {
                continue;
            }
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            for prefix in s.prefixes {
                add([prefix.as_bytes(), &bytes].concat())?;
            }
        }
    }
    let hand_made = repo.join("fuzz/seeds").join(target);
    if hand_made.is_dir() {
        for file in files_under(&hand_made)? {
            add(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?)?;
        }
    }
    ensure!(count > 0, "no seeds for fuzz target {target}: a fixture directory in xtask/src/fuzz.rs moved?");
    Ok(count)
}

/// Regular files under `dir`, recursively, in a stable order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs one target's binary on its corpus for `seconds`; its output goes to
/// `<work>/logs/<target>.log`, whose final lines give the counts.
fn run_target(
    work: &Path,
    binaries: &Path,
    target: &'static str,
    corpus: &Path,
    seconds: u64,
) -> Result<Outcome> {
    let artifacts = work.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let before = artifact_files(&artifacts)?;
    let started = Instant::now();
    let binary = binaries.join(target);
    let status = Command::new(&binary)
        .arg(corpus)
        .arg(format!("-max_total_time={seconds}"))
        // One slow input is a bug too (a parser that loops), but a loaded CI machine is slow:
        // well above any real input's time.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text =
        std::fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let crashes: Vec<PathBuf> =
        artifact_files(&artifacts)?.into_iter().filter(|f| !before.contains(f)).collect();
    if !status.success() || !crashes.is_empty() {
        // The fuzzer's own report: the panic message and the input's bytes.
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        ensure!(
            !crashes.is_empty(),
            "fuzz target {target} failed ({status}) without an artifact; see {}",
            log_path.display()
        );
    }
    Ok(Outcome {
        target,
        seconds,
        runs: final_runs(&text),
        corpus: std::fs::read_dir(corpus)?.count(),
        crashes,
    })
}

fn artifact_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    Ok(files)
}

/// libFuzzer's `stat::number_of_executed_units: N` (from `-print_final_stats=1`).
fn final_runs(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}
