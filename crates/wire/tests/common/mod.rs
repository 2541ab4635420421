//! Message-level decoding shared by the integration tests. The hook crate owns the real
//! protocol loop; this only strings the primitives together the way docs/hook-protocol.md §4–§7
//! lays the stream out.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;

use nwh_wire::{Reader, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Try {
    pub am_willing: bool,
    pub needed_system: String,
    pub drv_path: String,
    pub required_features: BTreeSet<String>,
}

pub fn read_settings_block<R: Read>(r: &mut Reader<R>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    while r.read_bool()? {
        let name = r.read_string()?;
        let value = r.read_string()?;
        out.push((name, value));
    }
    Ok(out)
}

/// Reads the payload that follows the word `try`.
pub fn read_try_payload<R: Read>(r: &mut Reader<R>) -> Result<Try> {
    Ok(Try {
        am_willing: r.read_bool()?,
        needed_system: r.read_string()?,
        drv_path: r.read_string()?,
        required_features: r.read_string_set()?,
    })
}

pub fn read_try<R: Read>(r: &mut Reader<R>) -> Result<Try> {
    let word = r.read_string()?;
    assert_eq!(word, "try");
    read_try_payload(r)
}

/// What the parent sends after `# accept`: inputs closure, then wanted outputs.
pub fn read_after_accept<R: Read>(r: &mut Reader<R>) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    Ok((r.read_string_set()?, r.read_string_set()?))
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
