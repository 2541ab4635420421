//! Makespans of our hook and Nix's own hook, side by side in one run, on the same test bed
//! and the same workloads. Printed for the notes (`--nocapture`); never asserted on, since
//! timings on a shared 2-core machine are not a test.

use std::collections::BTreeMap;
use std::path::Path;
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
/// Nix's own; returns the seconds it took. With `timeline`, our processes write theirs there.
fn run(tb: &Testbed, expr: &str, builders: Option<&str>, hook: Option<&str>, timeline: Option<&Path>) -> f64 {
    let bed = tb.machines_lines().join("\n");
    let builders = builders.unwrap_or(&bed);
    let mut args = vec!["--max-jobs", "0", "--option", "builders", builders];
    if let Some(h) = hook {
        args.extend(["--option", "build-hook", h]);
    }
    let mut cmd = tb.nix_build_cmd(expr, &args);
    if let Some(file) = timeline {
        cmd.env(nix_wasm_hook::timeline::VARIABLE, file);
    }
    let t = Instant::now();
    let out = cmd.output().unwrap();
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
    run(&tb, &sleeps(4, "0"), None, Some(ours), None);
    run(&tb, &sleeps(4, "0"), Some(&line), None, None);
    let own = run(&tb, &sleeps(n, seconds), None, None, None);
    let timelines = tempfile::tempdir_in("/tmp").unwrap();
    let (hook_timeline, builder_timeline) = (timelines.path().join("hook"), timelines.path().join("builder"));
    let wasm = run(&tb, &sleeps(n, seconds), None, Some(ours), Some(&hook_timeline));
    let served = run(&tb, &sleeps(n, seconds), Some(&line), None, Some(&builder_timeline));
    eprintln!(
        "MAKESPAN {name}, Nix {} master: Nix's own hook {own:.2} s, nix-wasm-hook as the hook {wasm:.2} s \
         (ratio {:.2}), as a builder of Nix's hook {served:.2} s (ratio {:.2}); lower bound {bound:.1} s",
        nix.name(),
        own / wasm,
        own / served
    );
    for (mode, file) in [("hook", &hook_timeline), ("builder", &builder_timeline)] {
        eprintln!("TIMELINE {name}, Nix {}, {mode} mode: {}", nix.name(), phases(file));
    }
}

/// The median time between consecutive phases over the processes of a timeline file that
/// built something, in milliseconds (`settings 1.2 ms, policy 30.1 ms, …`), and how many.
fn phases(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut processes: BTreeMap<u64, Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mark = (v["phase"].as_str().unwrap().to_string(), v["us"].as_f64().unwrap());
        processes.entry(v["pid"].as_u64().unwrap()).or_default().push(mark);
    }
    let mut gaps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut builds = 0;
    for marks in processes.values().filter(|m| m.iter().any(|(p, _)| p == "built")) {
        builds += 1;
        for pair in marks.windows(2) {
            let phase = pair[1].0.clone();
            if !order.contains(&phase) {
                order.push(phase.clone());
            }
            gaps.entry(phase).or_default().push((pair[1].1 - pair[0].1) / 1000.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let parts: Vec<String> =
        order.iter().map(|p| format!("{p} {:.1} ms", median(gaps.get_mut(p).unwrap()))).collect();
    format!("{builds} builds; median time to reach each phase from the one before: {}", parts.join(", "))
}

fn makespan_8_sleep_2_on_4_builders_1_job(nix: Nix) {
    compare(nix, "8 x sleep 2, 4 builders x 1 job", "1", 8, "2", 4.0);
}

fn makespan_64_sleep_0_2_on_4_builders_2_jobs(nix: Nix) {
    compare(nix, "64 x sleep 0.2, 4 builders x 2 jobs", "2", 64, "0.2", 1.6);
}
