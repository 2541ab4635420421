//! Protocol version words, as Nix's protocols exchange them in their greetings:
//! `major << 8 | minor`. A peer's version and ours are compared minor by minor.

/// The major version of a version word.
pub fn major(version: u64) -> u64 {
    version >> 8
}

/// The minor version of a version word.
pub fn minor(version: u64) -> u64 {
    version & 0xff
}

/// True when the negotiated `version` has what minor version `since` added.
pub fn has(version: u64, since: u64) -> bool {
    minor(version) >= since
}
