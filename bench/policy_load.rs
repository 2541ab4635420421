//! Getting a policy ready, per language: what a hook process pays at its first start (compile
//! the component and store the image: a cache miss), at every later start (map the stored
//! image: a hit), and for one decision over 16 machines in a fresh instance, as each request
//! makes. The Python and JavaScript policies are the ones `cargo xtask build-other-policies`
//! makes (`$NWH_PYTHON_POLICY`, `$NWH_JS_POLICY`); a policy that was not built has no row,
//! and the table says which.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use nix_wasm_hook::core::policy::{cache::Cache, Policy};
use nwh_decision::{MachineView, Request};

use crate::report::{Row, Stats, Table};
use crate::support::tool::policy_fixture;

/// One policy's figures, one value per round each, in milliseconds.
struct Figures {
    miss: Vec<f64>,
    hit: Vec<f64>,
    decide: Vec<f64>,
}

pub fn run(rounds: usize) -> Result<Vec<Table>> {
    let mut policies: Vec<(&str, PathBuf)> =
        vec![("default (Rust)", PathBuf::new()), ("C", policy_fixture("c").into())];
    let mut missing = Vec::new();
    // Built by `cargo xtask build-other-policies` (or the test command), named in the
    // environment; a run without them says so in its table.
    let built = |var: &str| std::env::var_os(var).map(PathBuf::from);
    for (name, path) in [("Python", built("NWH_PYTHON_POLICY")), ("JavaScript", built("NWH_JS_POLICY"))] {
        match path {
            Some(p) => policies.push((name, p)),
            None => missing.push(name),
        }
    }
    let mut figures: Vec<(&str, Figures)> = Vec::new();
    for (name, path) in &policies {
        let mut f = Figures { miss: Vec::new(), hit: Vec::new(), decide: Vec::new() };
        for _ in 0..rounds {
            let dir = tempfile::tempdir().context("a scratch cache directory")?;
            let cache = Cache::at(dir.path().join("cache"));
            let load = || -> Result<Policy> {
                if path.as_os_str().is_empty() {
                    Policy::default_policy(&cache)
                } else {
                    Policy::from_file(path, &cache)
                }
            };
            let started = Instant::now();
            drop(load()?);
            f.miss.push(ms(started));
            let started = Instant::now();
            let policy = load()?;
            f.hit.push(ms(started));
            let started = Instant::now();
            policy.call(&request(), &machines()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            f.decide.push(ms(started));
        }
        eprintln!("  {name}: loaded and decided");
        figures.push((name, f));
    }
    let not_built = if missing.is_empty() {
        String::new()
    } else {
        format!(" Not built for this run, so not measured: {}.", missing.join(", "))
    };
    let table = |title: &str, what: &str, pick: fn(&Figures) -> &Vec<f64>| Table {
        title: title.into(),
        what: format!("{what}{not_built}"),
        unit: "ms",
        stats: Stats::Rounds,
        rows: figures.iter().map(|(name, f)| Row::new(*name, pick(f).clone())).collect(),
    };
    Ok(vec![
        table(
            "Loading a policy at a hook's first start (compile and store)",
            "A policy's component compiled by wasmtime and its image stored in the cache directory: \
             what the first hook process after an install or an upgrade pays.",
            |f| &f.miss,
        ),
        table(
            "Loading a policy at later starts (the stored image)",
            "The same policy found in the cache: read, hashed once (the cache key and the traces' \
             policy identity), its image mapped.",
            |f| &f.hit,
        ),
        table(
            "One decision over 16 machines",
            "A fresh instance, the request and 16 machines lowered into it, the answer lifted back: \
             what each request costs once the policy is loaded.",
            |f| &f.decide,
        ),
    ])
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn request() -> Request {
    Request {
        drv_path: "/nix/store/00000000000000000000000000000000-bench.drv".into(),
        system: "x86_64-linux".into(),
        required_features: Vec::new(),
        am_willing: true,
        could_build_locally: true,
        local: Default::default(),
    }
}

fn machines() -> Vec<MachineView> {
    (0..16u32)
        .map(|i| MachineView {
            uri: format!("ssh://m{i}"),
            systems: vec!["x86_64-linux".into()],
            max_jobs: 4,
            speed_factor: 1.0 + f64::from(i),
            supported_features: Vec::new(),
            mandatory_features: Vec::new(),
            slots_in_use: i % 5,
            enabled: true,
            down_reason: None,
            facts: Default::default(),
        })
        .collect()
}
