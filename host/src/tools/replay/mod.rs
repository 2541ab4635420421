//! `nix-wasm-hook replay`: runs a policy over a decision trace, and compares two policies (or a
//! policy with what the hook recorded) request by request, so that a policy repository can
//! gate its CI on "decides as before, except where intended".
//!
//! Policies run exactly as in the hook: the same `Policies::decide` (fuel, memory, deadline,
//! validation, and the default standing in for a policy that fails), on the request and
//! machines recorded in the trace, one fresh instance per record. This is the command (its
//! arguments, the comparison, the printing); [`side`] runs a policy, [`read_ahead`] reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use crate::core::policy::{cache::Cache, Decided, Limits};
use nwh_decision::MachineView;
use nwh_options::Options;
use nwh_trace::Record;

mod read_ahead;
mod side;

use read_ahead::ReadAhead;
use side::Side;

/// Exit status when the answers differ and `--fail-on-diff` was given.
pub const EXIT_DIFF: i32 = 1;
/// Exit status for usage errors and for a trace or policy that cannot be read.
pub const EXIT_ERROR: i32 = 2;

/// Run a policy over a decision trace, alone or against another policy or the trace's answers.
///
/// Prints what the policy decides for every recorded request, or compares two policies (or a
/// policy with the answers recorded in the trace) request by request (docs/replay.md). Exit
/// status: 0 when done (answers may differ unless --fail-on-diff), 1 when answers differ
/// and --fail-on-diff was given, 2 on a usage error or a trace or policy that cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A trace the hook wrote (`trace = PATH` or `--trace PATH`); `-` reads standard input.
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// The policy component to run (answers A); the embedded default when absent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Compare with another policy component, `default` (the embedded default policy), or
    /// `recorded` (the answers the hook acted on when it wrote the trace).
    #[arg(long, value_name = "FILE|default|recorded")]
    pub against: Option<String>,
    /// Exit with status 1 when any answer differs.
    #[arg(long, requires = "against")]
    pub fail_on_diff: bool,
    /// One JSON object per record, then one summary object.
    #[arg(long)]
    pub json: bool,
    /// Options file whose policy limits (policy-fuel, policy-memory-mib, policy-timeout-ms)
    /// and cache-dir apply, as in the hook; its `policy` is not used.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub fn main(args: &Args) -> i32 {
    // Thousands of decisions in one process: instances from a pool.
    crate::core::policy::engine::pool_instances();
    crate::tools::main("replay", EXIT_ERROR, |out| run(args, out))
}

/// Runs the replay, writing to `out`; returns the exit status.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let opts = Options::load(args.config.as_deref())?;
    let (limits, cache) = (Limits::from(&opts), Cache::from(&opts));
    let a = Side::load(args.policy.as_deref(), limits, &cache)?;
    let b = match args.against.as_deref() {
        None => None,
        Some("recorded") => Some(Side::Recorded),
        Some("default") => Some(Side::load(None, limits, &cache)?),
        Some(p) => Some(Side::load(Some(Path::new(p)), limits, &cache)?),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    if !args.json {
        writeln!(out, "A: {}", a.label())?;
        if let Some(b) = &b {
            writeln!(out, "B: {}", b.label())?;
        }
    }
    let (mut records, mut fell_back_a, mut fell_back_b) = (0usize, 0usize, 0usize);
    let mut differing = Vec::new();
    // One record at a time: threads do not help, as most of a call's cost is mapping and
    // unmapping the fresh instance's memory, which the kernel serialises per process. Only
    // the parsing runs ahead, on a thread of its own.
    let ahead = ReadAhead::open(&args.trace)?;
    while let Some(item) = ahead.next() {
        let (n, rec) = item?;
        records += 1;
        let va = a.decide(&rec);
        let vb = b.as_ref().map(|b| b.decide(&rec));
        fell_back_a += usize::from(va.warning.is_some());
        fell_back_b += usize::from(vb.as_ref().is_some_and(|v| v.warning.is_some()));
        let same = vb.as_ref().map(|vb| vb.answer.decision == va.answer.decision);
        if same == Some(false) {
            differing.push(n);
        }
        print_record(&mut out, args.json, n, &rec, &va, vb.as_ref(), same)?;
        ahead.done(rec);
    }
    let differ = differing.len();
    if args.json {
        let mut summary = json!({"records": records, "a": a.json(fell_back_a)});
        if let Some(b) = &b {
            summary["b"] = b.json(fell_back_b);
            summary["same"] = json!(records - differ);
            summary["differ"] = json!(differ);
            summary["differing"] = json!(differing);
        }
        serde_json::to_writer(&mut out, &json!({ "summary": summary }))?;
        writeln!(out)?;
    } else {
        let mut line = format!("{records} records");
        if b.is_some() {
            line += &format!(": {} same, {differ} differ", records - differ);
        }
        for (side, n) in [("A", fell_back_a), ("B", fell_back_b)] {
            if n > 0 {
                line += &format!("; {side} failed on {n} and the default decided instead");
            }
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(if args.fail_on_diff && differ > 0 { EXIT_DIFF } else { 0 })
}

/// One record's line(s): every decision without `--against`, only differences and fallbacks with it.
fn print_record(
    out: &mut impl Write,
    json: bool,
    n: usize,
    rec: &Record,
    va: &Decided,
    vb: Option<&Decided>,
    same: Option<bool>,
) -> Result<()> {
    if json {
        let mut obj = json!({
            "record": n,
            "drv": drv_name(&rec.request.drv_path),
            "drv_path": rec.request.drv_path,
            "system": rec.request.system,
            "required_features": rec.request.required_features,
            "a": verdict_json(va, &rec.machines),
        });
        if let Some(vb) = vb {
            obj["b"] = verdict_json(vb, &rec.machines);
            obj["same"] = json!(same);
        }
        serde_json::to_writer(&mut *out, &obj)?;
        writeln!(out)?;
        return Ok(());
    }
    let drv = drv_name(&rec.request.drv_path);
    match vb {
        None => {
            let features = match rec.request.required_features.as_slice() {
                [] => "-".to_string(),
                f => f.join(","),
            };
            write!(
                out,
                "{n}  {drv}  {}  {features}  {}  fuel {}",
                rec.request.system,
                va.answer.decision.describe(&rec.machines),
                va.fuel_used
            )?;
            if let Some(w) = &va.warning {
                write!(out, "  ! {w}")?;
            }
            writeln!(out)?;
        }
        Some(vb) => {
            if same == Some(false) {
                writeln!(
                    out,
                    "record {n} {drv}: A {} | B {}",
                    va.answer.decision.describe(&rec.machines),
                    vb.answer.decision.describe(&rec.machines)
                )?;
            }
            for (side, v) in [("A", va), ("B", vb)] {
                if let Some(w) = &v.warning {
                    writeln!(out, "record {n} {drv}: {side}: {w}")?;
                }
            }
        }
    }
    Ok(())
}

fn verdict_json(v: &Decided, machines: &[MachineView]) -> serde_json::Value {
    json!({
        "answer": v.answer.decision.describe(machines),
        "choice": v.answer.decision,
        "rejected": v.answer.rejected,
        "decided_by": v.by,
        "fuel": v.fuel_used,
        "micros": v.micros,
        "warning": v.warning,
    })
}

/// `/nix/store/<hash>-hello-2.12.drv` → `hello-2.12`.
pub fn drv_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name,
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drv_names() {
        assert_eq!(drv_name("/nix/store/0c7w2i7kmf3ljc1vyqrvpxsn6gdn2l3y-hello-2.12.1.drv"), "hello-2.12.1");
        assert_eq!(drv_name("odd"), "odd");
    }
}
