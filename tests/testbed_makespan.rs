//! Makespans of our hook and Nix's own hook, side by side in one run, on the same test bed
//! and the same workloads. Printed for the notes (`--nocapture`); never asserted on, since
//! timings on a shared 2-core machine are not a test.

use std::time::Instant;

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, unique_nonce, Nix, Opts, Testbed};

on_every_nix!(makespan_8_sleep_2_on_4_builders_1_job, makespan_64_sleep_0_2_on_4_builders_2_jobs);

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

/// Builds `expr` with `builders` (the test bed's machines when `None`), through `hook` or
/// Nix's own; returns the seconds it took.
fn run(tb: &Testbed, expr: &str, builders: Option<&str>, hook: Option<&str>) -> f64 {
    let bed = tb.machines_lines().join("\n");
    let builders = builders.unwrap_or(&bed);
    let mut args = vec!["--max-jobs", "0", "--option", "builders", builders];
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
    // Builder mode: Nix's own hook hands everything to one line with four times the real
    // slots, so that it never postpones (and then sleeps build-poll-interval); what waits,
    // waits inside our builder for the next free slot.
    let builder = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    let slots: u32 = jobs.parse::<u32>().unwrap() * 4 * 4;
    let line = builder.builder_line(slots, "-");
    // A first build warms what a long-running machine has warm anyway: the policy cache and
    // the SSH masters of our hook.
    run(&tb, &sleeps(4, "0"), None, Some(ours));
    run(&tb, &sleeps(4, "0"), Some(&line), None);
    let own = run(&tb, &sleeps(n, seconds), None, None);
    let wasm = run(&tb, &sleeps(n, seconds), None, Some(ours));
    let served = run(&tb, &sleeps(n, seconds), Some(&line), None);
    eprintln!(
        "MAKESPAN {name}, Nix {} master: Nix's own hook {own:.2} s, nix-wasm-hook as the hook {wasm:.2} s \
         (ratio {:.2}), as a builder of Nix's hook {served:.2} s (ratio {:.2}); lower bound {bound:.1} s",
        nix.name(),
        own / wasm,
        own / served
    );
}

fn makespan_8_sleep_2_on_4_builders_1_job(nix: Nix) {
    compare(nix, "8 x sleep 2, 4 builders x 1 job", "1", 8, "2", 4.0);
}

fn makespan_64_sleep_0_2_on_4_builders_2_jobs(nix: Nix) {
    compare(nix, "64 x sleep 0.2, 4 builders x 2 jobs", "2", 64, "0.2", 1.6);
}
