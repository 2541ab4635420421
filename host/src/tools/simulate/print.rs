//! What `simulate` prints: the inputs, one column per policy, what was not built, or JSON.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::engine::{micros, Cluster, Place, Report};
use super::workload::Workload;
use super::Args;
use crate::core::policy::Policies;

/// `1h 02m 03s`, `4m 05s`, `6.7s`: short enough for a table, exact enough to compare.
pub fn duration(us: u64) -> String {
    let s = us as f64 / 1e6;
    let whole = s.round() as u64;
    match whole {
        _ if s < 60.0 => format!("{s:.1}s"),
        0..3600 => format!("{}m {:02}s", whole / 60, whole % 60),
        _ => format!("{}h {:02}m {:02}s", whole / 3600, whole / 60 % 60, whole % 60),
    }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 1024.0 {
        format!("{:.1} GiB", m / 1024.0)
    } else {
        format!("{m:.0} MiB")
    }
}

pub(super) fn print_text(
    out: &mut dyn Write,
    args: &Args,
    w: &Workload,
    c: &Cluster,
    sides: &[Policies],
    reports: &[Report],
) -> Result<()> {
    print_inputs(out, args, w, c)?;
    let heads: Vec<String> =
        sides.iter().enumerate().map(|(i, p)| format!("{}: {}", side_tag(i), short_label(p))).collect();
    print_table(out, &heads, &rows(w, c, reports))?;
    for (i, r) in reports.iter().enumerate() {
        print_not_built(out, side_tag(i), w, r)?;
    }
    Ok(())
}

/// What was simulated, and the least time any schedule needs.
fn print_inputs(out: &mut dyn Write, args: &Args, w: &Workload, c: &Cluster) -> Result<()> {
    let n = w.derivations.len();
    let slots: u32 = c.builders.iter().map(|b| b.machine.max_jobs).sum();
    let fastest = c.builders.iter().map(|b| b.true_speed).fold(c.local_speed, f64::max);
    writeln!(out, "workload: {} ({n} derivations)", w.source)?;
    writeln!(
        out,
        "machines: {} ({} builders, {slots} slots); local max-jobs {}; {} MiB/s",
        args.machines.display(),
        c.builders.len(),
        c.local.max_jobs,
        args.bandwidth
    )?;
    writeln!(
        out,
        "no schedule can finish sooner than {} (the critical path on the fastest machine)",
        duration(micros(w.critical_path_seconds(fastest)))
    )?;
    writeln!(out)?;
    Ok(())
}

/// The table's rows: a label, and a cell per policy.
fn rows(w: &Workload, c: &Cluster, reports: &[Report]) -> Vec<(String, Vec<String>)> {
    let n = w.derivations.len();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Report) -> String| {
        rows.push((label.to_string(), reports.iter().map(f).collect()));
    };
    row("makespan", &|r| duration(r.makespan_us));
    row("built", &|r| format!("{} of {n}", r.built()));
    row("waiting, mean", &|r| {
        let (sum, _) = r.waiting_us();
        duration(sum / r.built().max(1) as u64)
    });
    row("waiting, longest", &|r| duration(r.waiting_us().1));
    row("transferred", &|r| {
        let bytes: u64 = r.remote.iter().map(|u| u.transfer_bytes).sum();
        let us: u64 = r.remote.iter().map(|u| u.transfer_us).sum();
        format!("{} in {}", mib(bytes), duration(us))
    });
    row("decisions (postponed)", &|r| format!("{} ({})", r.decisions, r.postponed));
    for (i, b) in c.builders.iter().enumerate() {
        let m = &b.machine;
        let mut label = format!("{} ×{}, speed {}", m.uri, m.max_jobs, m.speed_factor);
        if b.true_speed != m.speed_factor {
            label += &format!(" (true {})", b.true_speed);
        }
        row(&label, &|r| {
            format!("{:>4} builds, {:>3.0} % busy", r.remote[i].builds, 100.0 * r.utilisation(i, m.max_jobs))
        });
    }
    if c.local.max_jobs > 0 {
        row("local", &|r| format!("{:>4} builds", r.local.builds));
    }
    rows
}

/// The headings and rows in columns as wide as their widest cell.
fn print_table(out: &mut dyn Write, heads: &[String], rows: &[(String, Vec<String>)]) -> Result<()> {
    let label_width = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..heads.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].chars().count())
                .chain([heads[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |label: &str, cells: &[String]| {
        let mut s = format!("{label:<label_width$}");
        for (cell, w) in cells.iter().zip(&widths) {
            s += &format!("   {cell:<w$}");
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line("", heads))?;
    for (label, cells) in rows {
        writeln!(out, "{}", line(label, cells))?;
    }
    Ok(())
}

/// Under the table, for the policy tagged `tag`: its failures and what it did not build.
fn print_not_built(out: &mut dyn Write, tag: char, w: &Workload, r: &Report) -> Result<()> {
    if let Some(w) = &r.first_warning {
        writeln!(out, "{tag}: the policy failed {} time(s); the first: {w}", r.fell_back)?;
    }
    for (d, why) in r.failed.iter().take(5) {
        writeln!(out, "{tag}: not built: {}: {why}", w.derivations[*d].name)?;
    }
    if r.failed.len() > 5 {
        writeln!(out, "{tag}: … and {} more not built", r.failed.len() - 5)?;
    }
    if !r.stuck.is_empty() {
        let names: Vec<&str> = r.stuck.iter().take(5).map(|&d| w.derivations[d].name.as_str()).collect();
        writeln!(
            out,
            "{tag}: {} derivation(s) waited forever ({}{}): no machine with a free slot ever took them",
            r.stuck.len(),
            names.join(", "),
            if r.stuck.len() > 5 { ", …" } else { "" }
        )?;
    }
    Ok(())
}

fn side_tag(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// `default` or the component's file name, with the start of its hash: short enough for a
/// column heading, exact enough to know which build of a policy it was.
fn short_label(p: &Policies) -> String {
    let name = match &p.chosen {
        Some(c) => {
            Path::new(c.name()).file_name().map_or(c.name().to_string(), |f| f.to_string_lossy().into_owned())
        }
        None => "default".to_string(),
    };
    format!("{name} ({})", &p.active().sha256()[..12])
}

pub(super) fn to_json(
    w: &Workload,
    c: &Cluster,
    sides: &[Policies],
    reports: &[Report],
) -> serde_json::Value {
    let builders: Vec<_> = c
        .builders
        .iter()
        .map(|b| {
            json!({"uri": b.machine.uri, "max_jobs": b.machine.max_jobs,
                   "speed_factor": b.machine.speed_factor, "true_speed": b.true_speed})
        })
        .collect();
    let results: Vec<_> = sides
        .iter()
        .zip(reports)
        .map(|(p, r)| {
            let (wait_sum, wait_max) = r.waiting_us();
            let per_builder: Vec<_> = c
                .builders
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let u = &r.remote[i];
                    json!({"uri": b.machine.uri, "builds": u.builds, "busy_s": u.busy_us as f64 / 1e6,
                           "utilisation": r.utilisation(i, b.machine.max_jobs),
                           "transfer_s": u.transfer_us as f64 / 1e6, "transfer_bytes": u.transfer_bytes})
                })
                .collect();
            let builds: Vec<_> = r
                .builds
                .iter()
                .enumerate()
                .map(|(d, b)| {
                    let name = &w.derivations[d].name;
                    match b {
                        None => json!({"name": name, "built": false}),
                        Some(b) => json!({
                            "name": name,
                            "on": match b.place { Place::Local => "local".to_string(),
                                                  Place::Remote(i) => c.builders[i].machine.uri.clone() },
                            "ready_s": b.ready_us as f64 / 1e6,
                            "start_s": b.start_us as f64 / 1e6,
                            "end_s": b.end_us as f64 / 1e6,
                        }),
                    }
                })
                .collect();
            json!({
                "policy": p.label(),
                "sha256": p.active().sha256(),
                "makespan_s": r.makespan_us as f64 / 1e6,
                "built": r.built(),
                "failed": r.failed.iter().map(|(d, why)| json!({"name": w.derivations[*d].name, "why": why})).collect::<Vec<_>>(),
                "stuck": r.stuck.iter().map(|&d| &w.derivations[d].name).collect::<Vec<_>>(),
                "waiting_mean_s": wait_sum as f64 / 1e6 / r.built().max(1) as f64,
                "waiting_max_s": wait_max as f64 / 1e6,
                "decisions": r.decisions,
                "postponed": r.postponed,
                "fell_back": r.fell_back,
                "fuel": r.fuel,
                "builders": per_builder,
                "local_builds": r.local.builds,
                "builds": builds,
            })
        })
        .collect();
    json!({
        "workload": {"source": w.source, "derivations": w.derivations.len(),
                     "critical_path_s": w.critical_path_seconds(1.0)},
        "machines": builders,
        "bandwidth_mib_s": c.bandwidth / (1024.0 * 1024.0),
        "local_jobs": c.local.max_jobs,
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(6_740_000), "6.7s");
        assert_eq!(duration(245_000_000), "4m 05s");
        assert_eq!(duration(3_723_000_000), "1h 02m 03s");
    }
}
