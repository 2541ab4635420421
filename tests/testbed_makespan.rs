//! Makespans of our hook and Nix's own hook, side by side in one run, on the same test bed
//! and the same workloads. Printed for the notes (`--nocapture`); never asserted on, since
//! timings on a shared 2-core machine are not a test.

use std::time::Instant;

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, unique_nonce, Nix, Opts, Testbed};

on_every_nix!(makespan_8_sleep_2_on_4_builders_1_job);

fn sleeps(n: usize, seconds: &str) -> String {
    let nonce = unique_nonce();
    let drvs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"(builtins.derivation {{ name = "nwh-sleep-{i}"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "/bin/sleep {seconds}; read h < /proc/sys/kernel/hostname; echo $h > $out" ]; }})"#
            )
        })
        .collect();
    format!("[ {} ]", drvs.join("\n"))
}

fn run(tb: &Testbed, expr: &str, hook: Option<&str>) -> f64 {
    let builders = tb.machines_lines().join("\n");
    let mut args = vec!["--max-jobs", "0", "--option", "builders", &builders];
    if let Some(h) = hook {
        args.extend(["--option", "build-hook", h]);
    }
    let t = Instant::now();
    let out = tb.nix_build(expr, &args);
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", describe(&out));
    secs
}

fn compare(nix: Nix, name: &str, jobs: &str, n: usize, seconds: &str, bound: f64) {
    let Some(tb) = Testbed::up_or_skip(4, Opts { jobs: Some(jobs.into()), ..Opts::default() }) else {
        return;
    };
    let tb = tb.with_master(nix);
    let hook = OurHook::new(&[]);
    let ours = hook.path.as_str();
    // A first build warms what a long-running machine has warm anyway: the policy cache and
    // the SSH masters of our hook.
    run(&tb, &sleeps(4, "0"), Some(ours));
    let own = run(&tb, &sleeps(n, seconds), None);
    let wasm = run(&tb, &sleeps(n, seconds), Some(ours));
    eprintln!(
        "MAKESPAN {name}, Nix {} master: Nix's own hook {own:.2} s, nix-wasm-hook {wasm:.2} s, ratio {:.2} (lower bound {bound:.1} s)",
        nix.name(),
        own / wasm
    );
}

fn makespan_8_sleep_2_on_4_builders_1_job(nix: Nix) {
    compare(nix, "8 x sleep 2, 4 builders x 1 job", "1", 8, "2", 4.0);
}

#[test]
fn makespan_64_sleep_0_2_on_4_builders_2_jobs() {
    compare(Nix::V2_8, "64 x sleep 0.2, 4 builders x 2 jobs", "2", 64, "0.2", 1.6);
}
