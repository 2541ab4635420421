//! The values of the settings this crate reads itself: how each is read, and the check made
//! when one is set.

use crate::error::{ConfError, Result};
use crate::origin::Origin;

pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_max_jobs(v: &str, cpus: u32) -> Option<u32> {
    if v == "auto" {
        Some(cpus.max(1))
    } else {
        v.parse().ok()
    }
}

/// Checks the settings this crate gives typed access to, so the accessors cannot fail later
/// and the error can still point at the offending line.
pub(crate) fn validate(name: &str, value: &str, origin: &Origin) -> Result<()> {
    let expected = match name {
        "max-jobs" if parse_max_jobs(value, 1).is_none() => "'auto' or a non-negative integer",
        "max-silent-time" | "timeout" if value.parse::<i64>().is_err() => "an integer (seconds)",
        "max-build-log-size" if value.parse::<u64>().is_err() => "a non-negative integer",
        "builders-use-substitutes" if parse_bool(value).is_none() => "'true' or 'false'",
        _ => return Ok(()),
    };
    Err(ConfError::InvalidValue {
        origin: origin.clone(),
        name: name.to_string(),
        value: value.to_string(),
        expected,
    })
}
