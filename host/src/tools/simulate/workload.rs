//! The work a simulation builds: derivations with durations, dependencies and output sizes,
//! read from a TOML file or generated from a seed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

#[derive(Clone, Debug, PartialEq)]
pub struct Derivation {
    pub name: String,
    pub system: String,
    pub features: Vec<String>,
    /// Build time on a machine of true speed 1.
    pub seconds: f64,
    /// Size of its output, which travels to the builders of its dependents and back home.
    pub output_bytes: u64,
    /// Indices of the derivations whose outputs it needs; always lower than its own index.
    pub deps: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Where it came from, for the report: a path, or `generated from seed N`.
    pub source: String,
    /// In dependency order: every derivation comes after its dependencies.
    pub derivations: Vec<Derivation>,
}

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    derivation: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
    name: Spanned<String>,
    system: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    seconds: Spanned<f64>,
    output_mib: Option<Spanned<f64>>,
    #[serde(default)]
    deps: Vec<Spanned<String>>,
}

impl Workload {
    /// Reads a workload file; `system` is the system of derivations that name none.
    pub fn from_file(path: &Path, system: &str) -> Result<Workload> {
        let text = nwh_files::read_to_string(path, nwh_files::WORKLOAD)
            .with_context(|| format!("reading {}", path.display()))?;
        Workload::parse(&text, &path.display().to_string(), system)
    }

    pub fn parse(text: &str, location: &str, system: &str) -> Result<Workload> {
        let at = |span: std::ops::Range<usize>| {
            let (line, column) = line_column(text, span.start);
            format!("{location}:{line}:{column}")
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let place = e.span().map_or_else(|| location.to_string(), &at);
            anyhow::anyhow!(
                "{place}: {}\n  expected: [[derivation]] tables with name, seconds, and optionally \
                 system, features, output-mib, deps (see docs/simulate.md)",
                e.message()
            )
        })?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, e) in file.derivation.iter().enumerate() {
            if let Some(first) = index.insert(e.name.get_ref(), i) {
                bail!(
                    "{}: derivation `{}` is defined twice (first at {}); give each a unique name",
                    at(e.name.span()),
                    e.name.get_ref(),
                    at(file.derivation[first].name.span())
                );
            }
        }
        let mut derivations = Vec::with_capacity(file.derivation.len());
        for e in &file.derivation {
            for (value, what) in [(Some(&e.seconds), "seconds"), (e.output_mib.as_ref(), "output-mib")] {
                let Some(value) = value else { continue };
                let v = *value.get_ref();
                if !(v.is_finite() && v >= 0.0) {
                    bail!("{}: {what} is {v}; expected a number ≥ 0", at(value.span()));
                }
            }
            let mut deps = Vec::with_capacity(e.deps.len());
            for d in &e.deps {
                let Some(&j) = index.get(d.get_ref().as_str()) else {
                    let hint = crate::core::hints::nearest(d.get_ref(), index.keys().copied())
                        .map_or_else(String::new, |n| format!("; did you mean `{n}`?"));
                    bail!(
                        "{}: `{}` depends on `{}`, which is not defined in this file{hint}",
                        at(d.span()),
                        e.name.get_ref(),
                        d.get_ref()
                    );
                };
                deps.push(j);
            }
            derivations.push(Derivation {
                name: e.name.get_ref().clone(),
                system: e.system.clone().unwrap_or_else(|| system.to_string()),
                features: e.features.clone(),
                seconds: *e.seconds.get_ref(),
                output_bytes: (e.output_mib.as_ref().map_or(0.0, |m| *m.get_ref()) * MIB) as u64,
                deps,
            });
        }
        let order = topological(&derivations).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| derivations[i].name.as_str()).collect();
            let first = &file.derivation[cycle[0]];
            anyhow::anyhow!(
                "{}: the dependencies form a cycle: {}; a derivation cannot depend on itself, \
                 even indirectly",
                at(first.name.span()),
                names.join(" → ")
            )
        })?;
        Ok(Workload { source: location.to_string(), derivations: reorder(derivations, &order) })
    }

    /// A graph shaped like a package set: a few early derivations (toolchains) that much
    /// depends on, libraries on top of them, applications on top; build times and output
    /// sizes spread over orders of magnitude. The same `count` and `seed` give the same graph.
    pub fn generate(count: usize, seed: u64, system: &str) -> Workload {
        let mut rng = SplitMix64(seed);
        let mut derivations: Vec<Derivation> = Vec::with_capacity(count);
        for i in 0..count {
            let mut deps = Vec::new();
            if i > 0 {
                let wanted = rng.below(4.min(i as u64) + 1) as usize;
                for _ in 0..wanted {
                    // Squaring leans towards the early, foundational derivations.
                    let j = (rng.unit().powi(2) * i as f64) as usize;
                    if !deps.contains(&j) {
                        deps.push(j);
                    }
                }
                deps.sort_unstable();
            }
            derivations.push(Derivation {
                name: format!("pkg-{i:04}"),
                system: system.to_string(),
                features: Vec::new(),
                seconds: round_ms(log_uniform(&mut rng, 5.0, 900.0)),
                output_bytes: (log_uniform(&mut rng, 0.5, 300.0) * MIB) as u64,
                deps,
            });
        }
        Workload { source: format!("generated from seed {seed}"), derivations }
    }

    /// The longest chain of build times, on a machine of the given speed: no schedule can
    /// finish sooner.
    pub fn critical_path_seconds(&self, speed: f64) -> f64 {
        let mut finish = vec![0.0f64; self.derivations.len()];
        for (i, d) in self.derivations.iter().enumerate() {
            let start = d.deps.iter().map(|&j| finish[j]).fold(0.0, f64::max);
            finish[i] = start + d.seconds / speed;
        }
        finish.into_iter().fold(0.0, f64::max)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A dependency order, or a cycle (as indices, first repeated implicitly) when there is none.
fn topological(ds: &[Derivation]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; ds.len()];
    let mut order = Vec::with_capacity(ds.len());
    for root in 0..ds.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency to visit); the stack is the current path.
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = ds[node].deps.get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(dep);
                        return Err(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Puts the derivations in `order` and renumbers their dependencies to match.
fn reorder(ds: Vec<Derivation>, order: &[usize]) -> Vec<Derivation> {
    let mut new_index = vec![0usize; ds.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<Derivation>> = ds.into_iter().map(Some).collect();
    order
        .iter()
        .map(|&old| {
            let mut d = slots[old].take().expect("each index appears once in a topological order");
            for dep in &mut d.deps {
                *dep = new_index[*dep];
            }
            d
        })
        .collect()
}

/// Steele, Lea and Flood's SplitMix64: tiny, fast, and the same on every platform, which is
/// all a reproducible workload needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

fn log_uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.unit() * (hi.ln() - lo.ln())).exp()
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "x86_64-linux";

    #[test]
    fn a_file_is_read_in_dependency_order() {
        let w = Workload::parse(
            r#"
[[derivation]]
name = "app"
seconds = 10
deps = ["lib"]

[[derivation]]
name = "lib"
seconds = 20.5
output-mib = 2
system = "aarch64-linux"
features = ["big-parallel"]
"#,
            "w.toml",
            SYS,
        )
        .unwrap();
        let names: Vec<&str> = w.derivations.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["lib", "app"]);
        assert_eq!(w.derivations[1].deps, [0]);
        assert_eq!(w.derivations[1].system, SYS);
        assert_eq!(w.derivations[0].system, "aarch64-linux");
        assert_eq!(w.derivations[0].output_bytes, 2 * 1024 * 1024);
        assert_eq!(w.critical_path_seconds(2.0), 15.25);
    }

    #[test]
    fn an_unknown_dependency_names_its_place_and_the_nearest_name() {
        let text = "[[derivation]]\nname = \"glibc\"\nseconds = 1\n\n[[derivation]]\nname = \"hello\"\nseconds = 1\ndeps = [\"glibcc\"]\n";
        let e = Workload::parse(text, "w.toml", SYS).unwrap_err().to_string();
        assert_eq!(
            e,
            "w.toml:8:9: `hello` depends on `glibcc`, which is not defined in this file; did you mean `glibc`?"
        );
    }

    #[test]
    fn a_cycle_is_named() {
        let text = "[[derivation]]\nname = \"a\"\nseconds = 1\ndeps = [\"b\"]\n[[derivation]]\nname = \"b\"\nseconds = 1\ndeps = [\"a\"]\n";
        let e = Workload::parse(text, "w.toml", SYS).unwrap_err().to_string();
        assert!(e.starts_with("w.toml:2:8: the dependencies form a cycle: a → b → a"), "{e}");
    }

    #[test]
    fn bad_fields_and_values_name_their_place() {
        let e = Workload::parse("[[derivation]]\nname = \"a\"\nsecs = 1\n", "w.toml", SYS).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.starts_with("w.toml:3:1: unknown field `secs`"), "{e}");
        let e = Workload::parse("[[derivation]]\nname = \"a\"\nseconds = -1\n", "w.toml", SYS).unwrap_err();
        assert_eq!(e.to_string(), "w.toml:3:11: seconds is -1; expected a number ≥ 0");
        let e = Workload::parse(
            "[[derivation]]\nname = \"a\"\nseconds = 1\n[[derivation]]\nname = \"a\"\nseconds = 2\n",
            "w.toml",
            SYS,
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("w.toml:5:8: derivation `a` is defined twice (first at w.toml:2:8)"));
    }

    #[test]
    fn generation_depends_on_the_seed_only() {
        let a = Workload::generate(200, 7, SYS);
        assert_eq!(a, Workload::generate(200, 7, SYS));
        assert_ne!(a.derivations, Workload::generate(200, 8, SYS).derivations);
        for (i, d) in a.derivations.iter().enumerate() {
            assert!(d.deps.iter().all(|&j| j < i), "{i}: {:?}", d.deps);
            assert!((5.0..=900.0).contains(&d.seconds), "{}", d.seconds);
        }
        let edges: usize = a.derivations.iter().map(|d| d.deps.len()).sum();
        assert!(edges > 200, "a package set is more than a chain: {edges} edges");
    }
}
