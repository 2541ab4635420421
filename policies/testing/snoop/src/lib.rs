//! Test policy `snoop`: built for **wasm32-wasip2**, so it imports WASI (std's adapter plus
//! the calls below), and inside `decide` it tries to observe the world through it:
//!
//! * environment variables (`std::env::vars`) and program arguments (`std::env::args`);
//! * preopened directories (`wasi:filesystem/preopens.get-directories`);
//! * listing `/` and reading `/etc/passwd` (`std::fs`);
//! * the wall clock and the monotonic clock, each read twice with ~10 k loop iterations in
//!   between (`SystemTime::now`, `Instant::now`);
//! * 16 random bytes (`wasi:random/random.get-random-bytes`).
//!
//! # What it answers (for the host's tests)
//!
//! It counts as **observed** (something real leaked into the sandbox) any of: an environment
//! variable, a program argument, a preopened directory, a successful listing of `/`, a
//! successful read of `/etc/passwd`, or a clock that **moved** between its two reads (a fixed
//! clock returns the same value twice; the value itself does not matter). Random bytes are
//! reported but never count: a seeded RNG is indistinguishable from a real one in one call.
//!
//! * Observed anything → `decline`, and **every** machine is rejected with the reason
//!   `snoop observed: <item>; <item>; …` (e.g. `snoop observed: env PATH; file /etc/passwd`).
//! * Observed nothing → exactly the default policy's answer (`try` with the free eligible
//!   machines ranked as Nix does, rejections as the default policy gives them).
//!
//! So a host test should pass a request with at least one free eligible machine and assert
//! `try [..]` (sandbox tight) versus `decline` with "snoop observed:" reasons (sandbox leaky).
//! Either way snoop writes a full report of every attempt to stderr, one line starting with
//! `snoop: `, which a host that captures guest stderr can show as policy logs.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What one `decide` call saw: `observed` are real leaks, `report` is everything tried.
#[derive(Default)]
struct Findings {
    observed: Vec<String>,
    report: Vec<String>,
}

fn burn() {
    let mut n = 0u64;
    for i in 0..10_000u64 {
        n = core::hint::black_box(n.wrapping_add(i));
    }
    core::hint::black_box(n);
}

fn snoop() -> Findings {
    let mut f = Findings::default();

    let vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    f.report.push(format!("env: {} vars", vars.len()));
    for (k, _) in &vars {
        f.observed.push(format!("env {k}"));
    }

    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    f.report.push(format!("args: {}", args.len()));
    for a in &args {
        f.observed.push(format!("arg {a:?}"));
    }

    let preopens = wasip2::filesystem::preopens::get_directories();
    f.report.push(format!("preopens: {}", preopens.len()));
    for (_, path) in &preopens {
        f.observed.push(format!("preopen {path}"));
    }

    match std::fs::read_dir("/") {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            f.report.push(format!("list /: {} entries", names.len()));
            f.observed.push(format!("dir / ({} entries)", names.len()));
        }
        Err(e) => f.report.push(format!("list /: {e}")),
    }

    match std::fs::read("/etc/passwd") {
        Ok(bytes) => {
            f.report.push(format!("read /etc/passwd: {} bytes", bytes.len()));
            f.observed.push("file /etc/passwd".to_string());
        }
        Err(e) => f.report.push(format!("read /etc/passwd: {e}")),
    }

    let since_epoch = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => format!("-{:?}", e.duration()),
    };
    let wall_1 = SystemTime::now();
    let mono_1 = Instant::now();
    burn();
    let wall_2 = SystemTime::now();
    let mono_2 = Instant::now();
    f.report.push(format!("wall clock: {} then {}", since_epoch(wall_1), since_epoch(wall_2)));
    if wall_1 != wall_2 {
        f.observed.push("wall clock moving".to_string());
    }
    let mono_delta = mono_2.duration_since(mono_1);
    f.report.push(format!("monotonic clock: moved {mono_delta:?}"));
    if mono_2 != mono_1 {
        f.observed.push("monotonic clock moving".to_string());
    }

    let random = wasip2::random::random::get_random_bytes(16);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    f.report.push(format!("random: {hex}"));

    f
}

struct Snoop;

impl wit::Guest for Snoop {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let findings = snoop();
        eprintln!(
            "snoop: {}; observed: {}",
            findings.report.join("; "),
            if findings.observed.is_empty() { "nothing".to_string() } else { findings.observed.join("; ") }
        );
        if findings.observed.is_empty() {
            let (request, machines) = convert::from_wit(request, machines);
            return convert::to_wit(logic::decide(&request, &machines));
        }
        let reason = format!("snoop observed: {}", findings.observed.join("; "));
        wit::Answer {
            decision: wit::Decision::Decline,
            rejected: (0..machines.len())
                .map(|i| wit::Rejection {
                    machine: u32::try_from(i).unwrap_or(u32::MAX),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }
}

export!(Snoop);
