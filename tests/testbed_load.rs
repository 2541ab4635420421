//! Load: 32 derivations at once on four builders of one or two slots. Every build records its
//! start and end on the builder that runs it (in that builder's own `/tmp`), so what is checked
//! is what the builders lived through: every build completes, and no builder ever runs more
//! builds at once than its max-jobs. Once with our hook and Nix's own hook taking turns in the
//! same Nix process (sharing the current-load directory), once through the builder front-end.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, sh_derivations, unique_nonce, Nix, Opts, Testbed};

on_every_nix!(
    our_hook_and_nixs_own_share_the_slots_and_no_builder_runs_more_than_its_max_jobs,
    through_the_builder_front_end_no_builder_runs_more_than_its_max_jobs,
);

const BUILDS: usize = 32;
/// Slots of builders 1 to 4.
const JOBS: [u32; 4] = [1, 2, 1, 2];

fn up(nix: Nix) -> Option<Testbed> {
    let jobs = JOBS.map(|j| j.to_string()).join(",");
    Testbed::up_or_skip_as(nix, JOBS.len(), Opts { jobs: Some(jobs), ..Opts::default() })
}

/// `BUILDS` independent derivations; each appends `start`/`end` with a nanosecond clock (the
/// builders share the host's kernel) to `/tmp/nwh-load-<nonce>.log` on its builder.
fn workload(nonce: &str) -> String {
    let log = format!("/tmp/nwh-load-{nonce}.log");
    sh_derivations(BUILDS, "nwh-load", |i| {
        format!(
            "echo start {i} $(/bin/date +%s%N) >> {log}; /bin/sleep 0.3; echo end {i} $(/bin/date +%s%N) >> {log}; \
             read h < /proc/sys/kernel/hostname; echo $h > $out"
        )
    })
}

/// Per builder (1-based): the builds it ran, and the most it ran at once, from its log.
fn lived_through(tb: &Testbed, nonce: &str) -> BTreeMap<usize, (usize, u32)> {
    let mut seen = BTreeMap::new();
    for b in 1..=JOBS.len() {
        let out = tb.exec(b, &["/bin/cat", &format!("/tmp/nwh-load-{nonce}.log")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut events: Vec<(u128, i32)> = text
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(words.len(), 3, "a log line of builder {b}: {l:?}");
                (words[2].parse().unwrap(), if words[0] == "start" { 1 } else { -1 })
            })
            .collect();
        // At the same instant an end comes before a start: one slot handed on.
        events.sort_by_key(|&(t, delta)| (t, delta));
        let (mut now, mut most) = (0i32, 0i32);
        for (_, delta) in &events {
            now += delta;
            most = most.max(now);
        }
        assert_eq!(now, 0, "builder {b}: every start has its end:\n{text}");
        seen.insert(b, (events.len() / 2, most as u32));
    }
    seen
}

fn assert_within_max_jobs(tb: &Testbed, nonce: &str, out: &std::process::Output) {
    assert!(out.status.success(), "{}", describe(out));
    assert_eq!(out_paths(out).len(), BUILDS, "every build completed");
    let seen = lived_through(tb, nonce);
    eprintln!("builder: (builds, most at once): {seen:?}");
    assert_eq!(seen.values().map(|(n, _)| n).sum::<usize>(), BUILDS, "each build ran once: {seen:?}");
    for (b, (_, most)) in &seen {
        assert!(
            *most <= JOBS[b - 1],
            "builder {b} ran {most} builds at once, max-jobs {}: {seen:?}",
            JOBS[b - 1]
        );
    }
    assert!(seen.values().filter(|(n, _)| *n > 0).count() >= 2, "the load was spread: {seen:?}");
}

/// Nix's own hook, as the master's Nix runs it by default.
fn nixs_own_hook(nix: Nix) -> &'static str {
    match nix {
        Nix::V2_8 => "/usr/libexec/nix/build-remote",
        _ => "/usr/bin/nix __build-remote",
    }
}

fn our_hook_and_nixs_own_share_the_slots_and_no_builder_runs_more_than_its_max_jobs(nix: Nix) {
    let Some(tb) = up(nix) else { return };
    let ours = OurHook::new(&[]);
    // One build-hook for Nix: each hook process it starts is ours or Nix's own, by the parity
    // of its PID; each says which it was. Both take the slots from the master's current-load.
    let dir = tempfile::tempdir().unwrap();
    let (mixed, said) = (dir.path().join("mixed-hook"), dir.path().join("which"));
    let script = format!(
        "#!/bin/sh\nif [ $(($$ % 2)) = 0 ]; then echo ours >> {said}; exec {ours} \"$@\"; \
         else echo nix >> {said}; exec {nix} \"$@\"; fi\n",
        said = said.display(),
        ours = ours.path,
        nix = nixs_own_hook(nix)
    );
    std::fs::write(&mixed, script).unwrap();
    std::fs::set_permissions(&mixed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nonce = unique_nonce();
    let bed = tb.machines_lines().join("\n");
    let hook = mixed.display().to_string();
    let out = tb.nix_build(
        &workload(&nonce),
        &["--max-jobs", "0", "--option", "builders", &bed, "--option", "build-hook", &hook],
    );
    assert_within_max_jobs(&tb, &nonce, &out);
    let which = std::fs::read_to_string(&said).unwrap();
    for hook in ["ours", "nix"] {
        assert!(which.lines().any(|l| l == hook), "{hook} took part: {which}");
    }
}

fn through_the_builder_front_end_no_builder_runs_more_than_its_max_jobs(nix: Nix) {
    let Some(tb) = up(nix) else { return };
    let ours = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    // Four times the real slots: Nix's hook never postpones, and what waits, waits in ours.
    let line = ours.builder_line(4 * JOBS.iter().sum::<u32>(), "-");
    let nonce = unique_nonce();
    let out = tb.nix_build(&workload(&nonce), &["--max-jobs", "0", "--option", "builders", &line]);
    assert_within_max_jobs(&tb, &nonce, &out);
}
