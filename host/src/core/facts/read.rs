//! The kernel's reports, read into facts. Each reader takes the text as it is and returns the
//! fact only when the text is what the kernel writes and the numbers are plausible: from a
//! builder these words are an attacker's, and a policy must never see a NaN, a negative load
//! or a pressure of 10⁹ %.

use nwh_decision::facts::{Load, Pressure};

/// A load average no machine reaches: one this high is a lie or garbage.
const MAX_LOAD: f64 = 1e6;
/// More CPUs than Linux supports (`NR_CPUS` ≤ 8192 today).
const MAX_CORES: u32 = 1 << 16;
/// The longest report read; the kernel's are a few dozen bytes.
pub const MAX_REPORT: usize = 4096;

/// `/proc/loadavg` (`0.52 0.58 0.59 1/234 5678`) and the online CPUs.
pub fn load(loadavg: &str, cores: u32, age_ms: u64) -> Option<Load> {
    let mut fields = bounded(loadavg)?.split_ascii_whitespace();
    let mut average = || fields.next()?.parse::<f64>().ok().filter(|x| (0.0..=MAX_LOAD).contains(x));
    let (avg1, avg5, avg15) = (average()?, average()?, average()?);
    Some(Load { avg1, avg5, avg15, cores, age_ms })
}

/// `/sys/devices/system/cpu/online`: ranges and single CPUs, `0-3,5,7-9`.
pub fn online_cpus(list: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in bounded(list)?.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(last.checked_sub(first)?.checked_add(1)?)?;
    }
    (1..=MAX_CORES).contains(&count).then_some(count)
}

/// `/proc/pressure/{cpu,memory,io}`: each one's `some avg10=…` line. All three, or none.
pub fn pressure(cpu: &str, memory: &str, io: &str, age_ms: u64) -> Option<Pressure> {
    Some(Pressure { cpu: some_avg10(cpu)?, memory: some_avg10(memory)?, io: some_avg10(io)?, age_ms })
}

/// `some avg10=1.23 avg60=… avg300=… total=…` → 1.23, a share in per cent.
fn some_avg10(report: &str) -> Option<f64> {
    let line = bounded(report)?.lines().find(|l| l.starts_with("some "))?;
    let value = line.split_ascii_whitespace().find_map(|w| w.strip_prefix("avg10="))?;
    value.parse::<f64>().ok().filter(|x| (0.0..=100.0).contains(x))
}

fn bounded(text: &str) -> Option<&str> {
    (text.len() <= MAX_REPORT).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_words_are_read() {
        let l = load("0.52 1.58 12.00 3/1234 56789\n", 8, 7).unwrap();
        assert_eq!((l.avg1, l.avg5, l.avg15, l.cores, l.age_ms), (0.52, 1.58, 12.0, 8, 7));
        assert_eq!(online_cpus("0-3,5,7-9\n"), Some(8));
        assert_eq!(online_cpus("0\n"), Some(1));
        let report = "some avg10=1.25 avg60=0.50 avg300=0.10 total=123456\n\
                      full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let p = pressure(report, "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", report, 3).unwrap();
        assert_eq!((p.cpu, p.memory, p.io, p.age_ms), (1.25, 0.0, 1.25, 3));
    }

    /// A builder's words are an attacker's: anything but plausible numbers in the kernel's
    /// layout gives no fact at all.
    #[test]
    fn nonsense_gives_no_fact() {
        for text in [
            "",
            "NaN 1 1 1/1 1",
            "inf 1 1",
            "-1 0 0 1/1 1",
            "1e300 1 1",
            "0.5 0.5",
            "a b c",
            &"9 ".repeat(5000),
        ] {
            assert_eq!(load(text, 4, 0), None, "{text:?}");
        }
        for text in ["", "3-1", "0-4294967295", "x", "0-70000", "1,,2", &"0,".repeat(3000)] {
            assert_eq!(online_cpus(text), None, "{text:?}");
        }
        let fine = "some avg10=1.00 avg60=0 avg300=0 total=0\n";
        for text in
            ["", "full avg10=1.00", "some avg10=NaN", "some avg10=101", "some avg10=-0.5", "some avg60=1"]
        {
            assert_eq!(pressure(text, fine, fine, 0), None, "{text:?}");
        }
    }
}
