//! A builder's facts, from one report it prints: the shell command [`SCRIPT`] run through the
//! builder's SSH master, its output read by [`parse`]. What the builder prints is trusted for
//! nothing: every section goes through [`super::read`]'s bounds, and a section that is missing
//! (no `/proc/pressure`, not Linux, a login that only runs `nix-store --serve`) leaves its fact
//! absent.

use std::collections::HashMap;

use nwh_decision::facts::{Amount, Count, Facts};

use super::read;

/// The command: each report after a `#name` line, errors dropped. POSIX `sh`, `cat`, `df -P`
/// and `ps -o` only, which every Linux builder has.
pub const SCRIPT: &str = "exec 2>/dev/null; \
    echo '#loadavg'; cat /proc/loadavg; \
    echo '#online'; cat /sys/devices/system/cpu/online; \
    echo '#cpu'; cat /proc/pressure/cpu; \
    echo '#memory'; cat /proc/pressure/memory; \
    echo '#io'; cat /proc/pressure/io; \
    echo '#df'; df -Pk /nix/store; \
    echo '#users'; ps -eo user=; \
    echo '#end'";

/// The most of a report read: `ps` on a busy builder lists some thousands of users.
pub const MAX_REPORT: usize = 256 << 10;

/// The facts in `report`, measured `age_ms` ago. A report cut short (no `#end`) gives none:
/// the count of builds in a cut `ps` list would be too low.
pub fn parse(report: &str, age_ms: u64) -> Facts {
    let Some(sections) = sections(report) else { return Facts::default() };
    let section = |name: &str| sections.get(name).map_or("", String::as_str);
    let load =
        read::online_cpus(section("online")).and_then(|cores| read::load(section("loadavg"), cores, age_ms));
    let pressure = read::pressure(section("cpu"), section("memory"), section("io"), age_ms);
    let free_store_bytes = df_available(section("df")).map(|bytes| Amount { bytes, age_ms });
    let builds_running = build_users(section("users")).map(|value| Count { value, age_ms });
    Facts { load, pressure, free_store_bytes, builds_running, ..Facts::default() }
}

/// The report's sections by name; none when it is cut short, too long, or names a section
/// twice (not what [`SCRIPT`] prints).
fn sections(report: &str) -> Option<HashMap<&str, String>> {
    if report.len() > MAX_REPORT || !report.trim_end().ends_with("\n#end") {
        return None;
    }
    let mut sections: HashMap<&str, String> = HashMap::new();
    let mut current = None;
    for line in report.lines() {
        if let Some(name) = line.strip_prefix('#') {
            if sections.insert(name, String::new()).is_some() {
                return None;
            }
            current = Some(name);
        } else {
            let body = sections.get_mut(current?)?;
            body.push_str(line);
            body.push('\n');
        }
    }
    Some(sections)
}

/// `df -Pk`: a header, then `device 1024-blocks used available capacity mount`.
fn df_available(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let available: u64 = line.split_ascii_whitespace().nth(3)?.parse().ok()?;
    available.checked_mul(1024)
}

/// Builds running: the build users (`nixbld…`) that have a process. Each build runs as one.
fn build_users(text: &str) -> Option<u32> {
    let mut users: Vec<&str> = text.lines().map(str::trim).filter(|u| u.starts_with("nixbld")).collect();
    users.sort_unstable();
    users.dedup();
    u32::try_from(users.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "#loadavg\n0.52 1.58 12.00 3/1234 56789\n#online\n0-7\n\
        #cpu\nsome avg10=1.25 avg60=0.50 avg300=0.10 total=1\n\
        #memory\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
        #io\nsome avg10=2.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=0\n\
        #df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda1 1000 400 600 40% /\n\
        #users\nroot\nroot\nnixbld3\nnixbld3\nnixbld1\nalice\n#end\n";

    #[test]
    fn a_builders_report_is_read() {
        let f = parse(REPORT, 40);
        let load = f.load.unwrap();
        assert_eq!((load.avg1, load.avg15, load.cores, load.age_ms), (0.52, 12.0, 8, 40));
        let p = f.pressure.unwrap();
        assert_eq!((p.cpu, p.memory, p.io), (1.25, 0.0, 2.0));
        assert_eq!(f.free_store_bytes, Some(Amount { bytes: 600 * 1024, age_ms: 40 }));
        assert_eq!(f.builds_running, Some(Count { value: 2, age_ms: 40 }));
        assert_eq!((f.missing_input_bytes, f.past_builds), (None, None));
    }

    /// What a builder without `/proc/pressure` (or not Linux at all) prints: the facts it has.
    #[test]
    fn missing_reports_leave_their_facts_absent() {
        let report = "#loadavg\n#online\n#cpu\n#memory\n#io\n#df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n\
            /dev/disk1 1000 400 600 40% /nix\n#users\nroot\n#end\n";
        let f = parse(report, 0);
        assert_eq!((f.load, f.pressure), (None, None));
        assert_eq!(f.free_store_bytes.map(|a| a.bytes), Some(614_400));
        assert_eq!(f.builds_running.map(|c| c.value), Some(0));
    }

    /// A builder is trusted for nothing it prints here: a cut, forged or oversized report gives
    /// no fact, or only facts within the kernel's bounds.
    #[test]
    fn a_hostile_report_gives_nothing_out_of_bounds() {
        assert_eq!(parse("", 0), Facts::default());
        assert_eq!(parse(&REPORT.replace("#end\n", ""), 0), Facts::default(), "cut short");
        assert_eq!(parse(&format!("{REPORT}{}", "x".repeat(MAX_REPORT)), 0), Facts::default());
        let forged = REPORT
            .replace("0.52 1.58", "NaN 1.58")
            .replace("avg10=1.25", "avg10=1e9")
            .replace("1000 400 600", "1 1 99999999999999999999");
        let f = parse(&forged, 0);
        assert_eq!((f.load, f.pressure, f.free_store_bytes), (None, None, None), "{f:?}");
        let twice = REPORT.replace("#users\n", "#df\nFilesystem\n/dev/x 1 1 1 1% /\n#users\n");
        assert_eq!(parse(&twice, 0), Facts::default(), "a section named twice");
        assert_eq!(parse(&format!("root\n{REPORT}"), 0), Facts::default(), "words before the first section");
    }
}
