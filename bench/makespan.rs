//! Makespans: many small builds spread over four builders, from `nix-build` start to exit, by
//! Nix building them locally with the same number of slots, by Nix's own hook, and by
//! nix-wasm-hook as the hook and as a builder of Nix's own hook.

use crate::report::{Against, Row, Stats, Table};
use crate::support::hook::OurHook;
use crate::support::testbed::{sh_derivations, Nix, Opts, Testbed};
use crate::{timed_build, timeline};

const LOCAL: &str = "Nix building them locally, same slots";
const NIX_HOOK: &str = "Nix's own hook";
const OURS: &str = "nix-wasm-hook as the hook";
const BUILDER: &str = "nix-wasm-hook as a builder of Nix's hook";

pub struct Workload {
    pub title: &'static str,
    pub builds: usize,
    pub seconds: &'static str,
    pub jobs: u32,
    /// The work divided by the slots: no scheduler finishes sooner.
    pub limit: f64,
    /// Compare with Nix building locally (`--max-jobs` = all the builders' slots), not with
    /// the limit: where the per-build cost of any Nix build matters as much as the work.
    pub against_local: bool,
    pub goal: f64,
}

pub const WORKLOADS: [Workload; 2] = [
    Workload {
        title: "8 × `sleep 2`, 4 builders × 1 job",
        builds: 8,
        seconds: "2",
        jobs: 1,
        limit: 4.0,
        against_local: false,
        goal: 1.1,
    },
    Workload {
        title: "64 × `sleep 0.2`, 4 builders × 2 jobs",
        builds: 64,
        seconds: "0.2",
        jobs: 2,
        limit: 1.6,
        against_local: true,
        goal: 1.3,
    },
];

fn sleeps(n: usize, seconds: &str) -> String {
    sh_derivations(n, "nwh-sleep", |_| {
        format!("/bin/sleep {seconds}; read h < /proc/sys/kernel/hostname; echo $h > $out")
    })
}

/// The table of one workload, and the timelines of our processes (one string per mode).
pub fn run(nix: Nix, w: &Workload, rounds: usize) -> (Table, Vec<String>) {
    let tb = Testbed::up(4, Opts { jobs: Some(w.jobs.to_string()), ..Opts::default() }).with_master(nix);
    let bed = tb.machines_lines().join("\n");
    let hook = OurHook::new(&[]);
    // Builder mode: Nix's own hook hands everything to one line with four times the real
    // slots, so that it never postpones (and then sleeps build-poll-interval); what waits,
    // waits inside our builder for the next free slot.
    let builder = OurHook::as_builder(&bed, &[]);
    let line = builder.builder_line(w.jobs * 4 * 4, "-");
    let slots = (w.jobs * 4).to_string();
    let variants: Vec<(&str, Vec<&str>)> = vec![
        (LOCAL, vec!["--max-jobs", &slots, "--option", "builders", ""]),
        (NIX_HOOK, vec!["--max-jobs", "0", "--option", "builders", &bed]),
        (OURS, vec!["--max-jobs", "0", "--option", "builders", &bed, "--option", "build-hook", &hook.path]),
        (BUILDER, vec!["--max-jobs", "0", "--option", "builders", &line]),
    ];
    // A first build warms what a long-running machine has warm anyway: the policy cache and
    // the SSH masters of our hook.
    for (label, args) in &variants[2..] {
        timed_build(&tb, label, &sleeps(4, "0"), args, None);
    }
    let timelines = tempfile::tempdir_in("/tmp").unwrap();
    let mut times = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (i, (label, args)) in variants.iter().enumerate() {
            let file = timelines.path().join(format!("{i}-{round}"));
            let (secs, _) = timed_build(&tb, label, &sleeps(w.builds, w.seconds), args, Some(&file));
            eprintln!("  round {}: {label}: {secs:.2} s", round + 1);
            times[i].push(secs);
        }
    }
    let reference = if w.against_local { Against::Row(LOCAL) } else { Against::Value(w.limit, "the limit") };
    let mut rows = Vec::new();
    for ((label, _), values) in variants.iter().zip(times) {
        let row = Row::new(*label, values);
        rows.push(match *label {
            LOCAL if w.against_local => row,
            LOCAL => row.against(Against::Value(w.limit, "the limit"), None),
            NIX_HOOK => row.against(reference.clone(), None),
            _ => row.against(reference.clone(), Some(w.goal)),
        });
    }
    let phases = [(OURS, 2), (BUILDER, 3)]
        .iter()
        .map(|(label, i)| {
            let files: Vec<_> = (0..rounds).map(|r| timelines.path().join(format!("{i}-{r}"))).collect();
            format!("{label}: {}", timeline::phases(&files))
        })
        .collect();
    let table = Table {
        title: format!("{}, Nix {} master", w.title, nix.name()),
        what: format!(
            "{} derivations, each `sleep {}` and nothing else, built from one `nix-build`; the limit (work ÷ \
             slots) is {:.1} s. The local build is Nix with `--max-jobs {slots}` and no builders.",
            w.builds, w.seconds, w.limit
        ),
        unit: "s",
        stats: Stats::Rounds,
        rows,
    };
    (table, phases)
}
