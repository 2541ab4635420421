//! Transfer: a 256 MiB input closure of 16 paths of fresh random bytes, uploaded to one builder,
//! a trivial build, its small output back; the whole `nix-build` timed. Beside it, the same
//! bytes through a bare `ssh builder 'cat > /dev/null'`, the most any upload can hope for.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::report::{Against, Row, Stats, Table};
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, unique_nonce, Nix, Opts, Testbed};
use crate::{timed_build, timeline};

const PATHS: usize = 16;
const MIB_PER_PATH: usize = 16;

const RAW: &str = "bare ssh, the same bytes";
const NIX_HOOK: &str = "Nix's own hook";
const OURS: &str = "nix-wasm-hook as the hook";
const BUILDER: &str = "nix-wasm-hook as a builder of Nix's hook";

/// Fresh input paths in the master's store: `PATHS` files of random bytes, added with
/// `nix-store --add`. Returns their store paths and the files.
fn fresh_inputs(tb: &Testbed, dir: &std::path::Path) -> (Vec<String>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut paths = Vec::new();
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    for i in 0..PATHS {
        let file = dir.join(format!("nwh-transfer-{i}-{}", unique_nonce()));
        let mut out = std::fs::File::create(&file).unwrap();
        std::io::copy(&mut (&mut random).take((MIB_PER_PATH << 20) as u64), &mut out).unwrap();
        out.flush().unwrap();
        let added = tb.master_store(&["--add", &file.display().to_string()]);
        assert!(added.status.success(), "{}", describe(&added));
        paths.push(String::from_utf8_lossy(&added.stdout).trim().to_string());
        files.push(file);
    }
    (paths, files)
}

fn derivation(inputs: &[String]) -> String {
    let quoted: Vec<String> = inputs.iter().map(|p| format!("(builtins.storePath \"{p}\")")).collect();
    format!(
        r#"builtins.derivation {{ name = "nwh-transfer"; nonce = "{}"; system = builtins.currentSystem;
  builder = "/bin/sh"; inputs = [ {} ]; args = [ "-c" "echo $inputs > $out" ]; }}"#,
        unique_nonce(),
        quoted.join(" ")
    )
}

/// Seconds for the bytes of `files` through a bare ssh to builder 1, with the test bed's
/// client configuration (`testbed.sh ssh` reads no stdin).
fn raw_ssh(files: &[PathBuf]) -> f64 {
    let t = Instant::now();
    let mut ssh = Command::new("ssh")
        .args(["-F", "/var/lib/nwh-testbed/ssh/config", "nwhtb-b1", "cat > /dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    for f in files {
        std::io::copy(&mut std::fs::File::open(f).unwrap(), &mut stdin).unwrap();
    }
    drop(stdin);
    assert!(ssh.wait().unwrap().success());
    t.elapsed().as_secs_f64()
}

/// Removes what a round added to the master's store, so that rounds do not fill the disk.
fn forget(tb: &Testbed, out: &std::process::Output, drv_inputs: &[String]) {
    let mut paths: Vec<String> = crate::support::testbed::out_paths(out);
    if let Some(p) = paths.first() {
        let deriver = tb.master_store(&["--query", "--deriver", p]);
        paths.push(String::from_utf8_lossy(&deriver.stdout).trim().to_string());
    }
    paths.extend(drv_inputs.iter().cloned());
    let mut args = vec!["--delete"];
    args.extend(paths.iter().map(String::as_str));
    let _ = tb.master_store(&args);
}

/// The table of times, the table of our processes' peak resident memory, and where their
/// time went (one line per mode).
pub fn run(nix: Nix, rounds: usize) -> (Table, Table, Vec<String>) {
    let tb = Testbed::up(1, Opts::default()).with_master(nix);
    let bed = tb.machines_lines().join("\n");
    let hook = OurHook::new(&[]);
    let builder = OurHook::as_builder(&bed, &[]);
    let line = builder.builder_line(4, "-");
    let variants: Vec<(&str, Vec<&str>)> = vec![
        (NIX_HOOK, vec!["--max-jobs", "0", "--option", "builders", &bed]),
        (OURS, vec!["--max-jobs", "0", "--option", "builders", &bed, "--option", "build-hook", &hook.path]),
        (BUILDER, vec!["--max-jobs", "0", "--option", "builders", &line]),
    ];
    // A first build warms what a long-running machine has warm anyway: the policy cache, our
    // hook's SSH master and its warm session (Nix's hook and bare ssh connect anew each time,
    // as they always do).
    for (label, args) in &variants[1..] {
        timed_build(&tb, label, &derivation(&[]), args, None);
    }
    let scratch = tempfile::tempdir_in("/tmp").unwrap();
    let mut measured = Measured { times: vec![Vec::new(); variants.len() + 1], rss: vec![Vec::new(); 2] };
    for round in 0..rounds {
        measured.round(&tb, scratch.path(), round, &variants);
    }
    let phases = [(OURS, 1), (BUILDER, 2)]
        .iter()
        .map(|(label, i)| {
            let files: Vec<_> = (0..rounds).map(|r| timeline_file(scratch.path(), *i, r)).collect();
            format!("{label}: {}", timeline::phases(&files))
        })
        .collect();
    (time_table(nix, measured.times), memory_table(nix, measured.rss), phases)
}

/// What the rounds measured: seconds per row of the time table (bare ssh first, then each
/// variant), and the peak memory of each of our two modes.
struct Measured {
    times: Vec<Vec<f64>>,
    rss: Vec<Vec<f64>>,
}

impl Measured {
    /// One round: each variant builds fresh inputs (the first also sends them through bare ssh),
    /// and what it added is removed again.
    fn round(
        &mut self,
        tb: &Testbed,
        scratch: &std::path::Path,
        round: usize,
        variants: &[(&str, Vec<&str>)],
    ) {
        for (i, (label, args)) in variants.iter().enumerate() {
            let (inputs, files) = fresh_inputs(tb, scratch);
            if i == 0 {
                let secs = raw_ssh(&files);
                eprintln!("  round {}: {RAW}: {secs:.2} s", round + 1);
                self.times[0].push(secs);
            }
            let file = timeline_file(scratch, i, round);
            let (secs, out) = timed_build(tb, label, &derivation(&inputs), args, Some(&file));
            eprintln!("  round {}: {label}: {secs:.2} s", round + 1);
            self.times[i + 1].push(secs);
            if i > 0 {
                if let Some(mib) = timeline::peak_rss_mib(std::slice::from_ref(&file)) {
                    self.rss[i - 1].push(mib);
                }
            }
            forget(tb, &out, &inputs);
            for f in files {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// Where the timeline of variant `variant`'s build in `round` is written.
fn timeline_file(scratch: &std::path::Path, variant: usize, round: usize) -> PathBuf {
    scratch.join(format!("timeline-{variant}-{round}"))
}

/// The table of times, each row against bare ssh with the same bytes.
fn time_table(nix: Nix, times: Vec<Vec<f64>>) -> Table {
    let labels = [RAW, NIX_HOOK, OURS, BUILDER];
    let rows = labels
        .iter()
        .zip(times)
        .map(|(label, values)| {
            let row = Row::new(*label, values);
            match *label {
                RAW => row,
                NIX_HOOK => row.against(Against::Row(RAW), None),
                _ => row.against(Against::Row(RAW), Some(1.2)),
            }
        })
        .collect();
    Table {
        title: format!("Transfer of a 256 MiB closure to one builder, Nix {} master", nix.name()),
        what: format!(
            "{PATHS} input paths of {MIB_PER_PATH} MiB of fresh random bytes each (new in every round, so \
             nothing is on the builder yet), a build that only names them, its small output back; the \
             whole `nix-build` timed. The bare ssh row sends the same bytes through one `ssh` to \
             `cat > /dev/null`."
        ),
        unit: "s",
        stats: Stats::Rounds,
        rows,
    }
}

/// The table of our two modes' peak memory.
fn memory_table(nix: Nix, rss: Vec<Vec<f64>>) -> Table {
    Table {
        title: format!("Peak memory of a hook process during that transfer, Nix {} master", nix.name()),
        what: "The largest peak resident set (`VmHWM`) of any of our processes in a round's build, as \
               their timelines recorded it."
            .into(),
        unit: "MiB",
        stats: Stats::Rounds,
        rows: [OURS, BUILDER]
            .iter()
            .zip(rss)
            .map(|(label, values)| Row::new(*label, values).against(Against::Absolute, Some(30.0)))
            .collect(),
    }
}
