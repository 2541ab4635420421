//! Decision traces: one JSON line per decision the hook makes (`trace = PATH`), and the reader
//! that `replay` uses. A line holds exactly what the policy saw and answered, so another
//! policy can be run on the same input later and the answers compared.
//!
//! Several hook processes append to one file at once (Nix starts one per build), so a record
//! is written with a single `write(2)` on an `O_APPEND` descriptor, which the kernel places
//! whole at the end of the file, after any other process's line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::decision::{Answer, MachineView, Request};
use crate::policy::{Decided, DecidedBy, Policy};

/// The format of a line; the reader refuses others rather than guess at their meaning.
pub const VERSION: u32 = 1;

/// `trace-max-bytes` when not set: a few hundred thousand decisions on a dozen machines.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// One decision. Field names are the JSON keys (snake_case, like `Request`'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// When the hook started deciding, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The hook process: lines with one pid belong to one `try` and its re-decisions.
    pub pid: u32,
    pub request: Request,
    /// The machines as the policy saw them (lines of the machines file and live slot counts).
    pub machines: Vec<MachineView>,
    /// The policy the hook was configured with (the embedded default when none was given).
    pub policy: PolicyId,
    /// The answer the hook acted on; the default's when the policy failed.
    pub answer: Answer,
    pub decided_by: By,
    /// Why the default stood in for the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Fuel spent by the call whose answer was used.
    pub fuel: u64,
    /// Wall-clock time of the policy call(s), instantiation included.
    pub micros: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyId {
    pub name: String,
    pub sha256: String,
}

impl PolicyId {
    pub fn of(p: &Policy) -> PolicyId {
        PolicyId { name: p.name().to_string(), sha256: p.sha256().to_string() }
    }
}

/// Which policy's answer was used: the configured one, or the default standing in (or being
/// the configured one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum By {
    Policy,
    Default,
}

impl From<DecidedBy> for By {
    fn from(b: DecidedBy) -> By {
        match b {
            DecidedBy::Policy => By::Policy,
            DecidedBy::Default => By::Default,
        }
    }
}

/// What the hook did with the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// `# accept` with this machine.
    Accepted {
        uri: String,
    },
    Declined,
    /// `# postpone` sent to Nix.
    Postponed,
    /// A postpone the hook kept to itself while it waited for a slot to free; it decided
    /// again. Only recorded when the machines changed since the last such line.
    Waited,
    /// The chosen machine could not be reached; the hook decided again without it. Why is in
    /// the next record, as that machine's `down_reason` (key material redacted).
    ConnectionFailed {
        uri: String,
    },
}

/// Appends records to a trace file, rotating it when it grows past its bound.
pub struct Writer {
    path: PathBuf,
    max_bytes: u64,
    policy: PolicyId,
    secrets: Vec<String>,
    warned: bool,
}

impl Writer {
    pub fn new(path: PathBuf, max_bytes: u64, policy: PolicyId) -> Writer {
        Writer { path, max_bytes, policy, secrets: Vec::new(), warned: false }
    }

    /// Key material from the machines file (key paths, host keys) to keep out of the free
    /// text a record carries: a down reason holds ssh's own words, which may name the key
    /// file or quote the host key.
    pub fn with_secrets(mut self, machines: &[nwh_machines::Machine]) -> Writer {
        for m in machines {
            if let Some(k) = &m.ssh_key {
                self.secrets.push(k.display().to_string());
            }
            if let Some(h) = &m.host_key {
                self.secrets.push(h.base64.clone());
                self.secrets.push(h.line.clone());
                // The key blob alone, as ssh quotes it without the type or comment.
                self.secrets.extend(h.line.split_whitespace().nth(1).map(str::to_string));
            }
        }
        self.secrets.retain(|s| !s.is_empty());
        // Longest first, so a line is redacted whole before its blob is looked for.
        self.secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
        self
    }

    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "[redacted]");
            }
        }
        redact_fingerprints(&t)
    }

    /// Records one decision. A trace is a diagnostic, so failing to write it must not fail a
    /// build: the first failure returns a warning to show, later ones nothing.
    pub fn record(
        &mut self,
        time: SystemTime,
        request: &Request,
        machines: &[MachineView],
        decided: &Decided,
        outcome: Outcome,
    ) -> Option<String> {
        let rec = Record {
            v: VERSION,
            time: rfc3339(time),
            pid: std::process::id(),
            request: request.clone(),
            machines: machines
                .iter()
                .map(|m| MachineView {
                    down_reason: m.down_reason.as_deref().map(|r| self.scrub(r)),
                    ..m.clone()
                })
                .collect(),
            policy: self.policy.clone(),
            answer: decided.answer.clone(),
            decided_by: decided.by.into(),
            warning: decided.warning.as_deref().map(|w| self.scrub(w)),
            fuel: decided.fuel_used,
            micros: decided.micros,
            outcome,
        };
        match append(&self.path, self.max_bytes, &rec) {
            Ok(()) => None,
            Err(_) if self.warned => None,
            Err(e) => {
                self.warned = true;
                Some(format!(
                    "cannot write the decision trace {}: {e:#}; decisions go unrecorded, builds go on",
                    self.path.display()
                ))
            }
        }
    }
}

/// `SHA256:<base64>` (an ssh key fingerprint, which ssh prints for a host key that does not
/// match) becomes `SHA256:[redacted]`.
fn redact_fingerprints(text: &str) -> String {
    const TAG: &str = "SHA256:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(TAG) {
        let after = &rest[at + TAG.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .unwrap_or(after.len());
        out.push_str(&rest[..at + TAG.len()]);
        if len > 0 {
            out.push_str("[redacted]");
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Appends one record as one line, rotating first when the file has reached `max_bytes`.
pub fn append(path: &Path, max_bytes: u64, rec: &Record) -> Result<()> {
    let mut line = serde_json::to_vec(rec).context("encoding the record")?;
    line.push(b'\n');
    let mut file = open_append(path)?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) >= max_bytes {
        rotate(path, &file);
        file = open_append(path)?;
    }
    // One write(2): with O_APPEND the kernel puts the line at the end in one piece, even
    // with other hooks appending at the same moment. Retrying a short write would not be
    // atomic any more, so a short write is reported instead.
    let n = file.write(&line).with_context(|| format!("appending to {}", path.display()))?;
    anyhow::ensure!(n == line.len(), "short write to {} ({n} of {} bytes)", path.display(), line.len());
    Ok(())
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Where the previous, full file goes; one is kept.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Moves the full file `file` (opened as `path`) to `path.1`. Two hooks may find it full at
/// once; if both renamed, the second would move the first one's fresh, nearly empty file
/// over `path.1` and lose the full one. So only the hook that holds the lock on the full
/// file, and sees that `path` still names it, renames. A hook that loses the race simply
/// appends to whatever `path` names now.
fn rotate(path: &Path, file: &File) {
    use rustix::fs::{flock, FlockOperation};
    if flock(file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return;
    }
    let same = match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        // A failure leaves the file growing past its bound, which is better than no trace.
        let _ = std::fs::rename(path, rotated(path));
    }
    let _ = flock(file, FlockOperation::Unlock);
}

/// The longest line read as a record: a record of ten thousand machines (the most a machines
/// file gives) is under 2 MiB. A longer line stops the reader with an error, before it is
/// held whole in memory.
pub const MAX_LINE: u64 = 64 << 20;

/// Reads a trace, one record per non-empty line.
pub struct Reader {
    path: PathBuf,
    input: BufReader<Box<dyn std::io::Read>>,
    line: usize,
    failed: bool,
}

impl Reader {
    /// `-` reads standard input.
    pub fn open(path: &Path) -> Result<Reader> {
        let input: Box<dyn std::io::Read> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            Box::new(File::open(path).with_context(|| format!("opening the trace {}", path.display()))?)
        };
        Ok(Reader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 16, input),
            line: 0,
            failed: false,
        })
    }

    /// The next line, without its end, at most [`MAX_LINE`] long.
    fn next_line(&mut self) -> Option<Result<String>> {
        let mut bytes = Vec::new();
        let read = (&mut self.input).take(MAX_LINE + 1).read_until(b'\n', &mut bytes);
        self.line += 1;
        let at = || format!("{}:{}", self.path.display(), self.line);
        match read {
            Ok(0) => None,
            Err(e) => Some(Err(e).with_context(|| format!("reading {}", at()))),
            Ok(_) if bytes.len() as u64 > MAX_LINE => Some(Err(anyhow::anyhow!(
                "{}: the line is longer than {}, the most a trace record may be: is this a trace?",
                at(),
                nwh_files::size(MAX_LINE)
            ))),
            Ok(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                Some(String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", at())))
            }
        }
    }
}

impl Iterator for Reader {
    /// The line number (1-based) and the record on it.
    type Item = Result<(usize, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let text = match self.next_line()? {
                Ok(t) => t,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(parse_line(&text).map(|r| (self.line, r)).map_err(|e| {
                // serde's words may quote the offending value, which may be megabytes long.
                anyhow::anyhow!(
                    "{}:{}: not a nix-wasm-hook trace record: {}",
                    self.path.display(),
                    self.line,
                    shorten(&format!("{e:#}"))
                )
            }));
        }
    }
}

/// At most a few hundred characters of `text`, for an error that quotes input.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
        None => text.to_string(),
    }
}

pub fn parse_line(text: &str) -> Result<Record> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let version_error =
        |v: u32| anyhow::anyhow!("format version {v} (this nix-wasm-hook reads version {VERSION})");
    // Parsed once: at a thousand machines a line costs about as much to parse as to decide.
    match serde_json::from_str::<Record>(text) {
        Ok(record) if record.v == VERSION => Ok(record),
        Ok(record) => Err(version_error(record.v)),
        // A line from a newer hook may not fit this record: named as such, not as garbage.
        Err(e) => match serde_json::from_str::<Version>(text) {
            Ok(v) if v.v != VERSION => Err(version_error(v.v)),
            _ => Err(e.into()),
        },
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-03-01T12:34:56.789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`), to avoid a date crate for one timestamp.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 (a leap day) 23:59:59.5
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_500);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.500Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn fingerprints_are_redacted() {
        assert_eq!(
            redact_fingerprints(
                "offered SHA256:ZP9ekP0qMv2GCDfDy3e/MxuGDv2qMmThoqbT1xZ3oHA, expected SHA256:x+y="
            ),
            "offered SHA256:[redacted], expected SHA256:[redacted]"
        );
        assert_eq!(redact_fingerprints("no SHA256: here"), "no SHA256: here");
    }

    #[test]
    fn a_newer_format_is_named() {
        let e = parse_line(r#"{"v": 2, "whatever": true}"#).unwrap_err();
        assert!(format!("{e:#}").contains("format version 2"), "{e:#}");
    }
}
