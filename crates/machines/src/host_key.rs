//! The pinned ssh host key of column 8 (docs/machines-file.md §3): the base64 of the builder's
//! whole public host key line, as Nix's `base64-ssh-public-host-key` store parameter takes it.
//!
//! The usual mistakes (the key line itself, the bare key blob, some other text) each get their
//! own message with the value that should have been written.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::diagnostic::Token;
use crate::BLANK;

/// The pinned ssh host key of a machine (column 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// As written, because that is what Nix's `base64-ssh-public-host-key` store parameter takes.
    pub base64: String,
    /// Decoded `known_hosts`-style key, e.g. `ssh-ed25519 AAAA…`, without a trailing line end;
    /// the hook writes `<host> <line>` into a temporary known-hosts file.
    pub line: String,
}

/// Nix's decoder stops at `=` and ignores leftover bits, so padding and trailing bits must not
/// matter here either.
const NIX_BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(crate) const HOST_KEY_EXPECTED: &str = "the base64 of the builder's whole public host key line, e.g. \
     the output of `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` run on the builder, or '-'";

const ENCODE_FIX: &str =
    "encode the builder's public host key line: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub`";

pub(crate) struct KeyError {
    pub(crate) at: usize,
    pub(crate) len: usize,
    pub(crate) message: String,
    pub(crate) fix: String,
    /// The column held the key line itself, whose second word then looks like a 9th column.
    pub(crate) plain: bool,
}

impl KeyError {
    fn new(at: usize, len: usize, message: String, fix: String) -> Self {
        KeyError { at, len, message, fix, plain: false }
    }

    /// An error about the whole token.
    fn of(t: Token, message: String, fix: String) -> Self {
        KeyError::new(t.at, t.text.len(), message, fix)
    }
}

impl HostKey {
    /// A host key as Nix's `base64-ssh-public-host-key` store parameter carries it: column 8's
    /// encoding, decoded as column 8 is. The error says what is wrong and how to fix it.
    pub fn from_base64(text: &str) -> Result<HostKey, String> {
        host_key(Token { at: 0, text }, None).map_err(|e| format!("{}; {}", e.message, e.fix))
    }
}

/// Column 8 as `t`; `next` is the token after it, part of the key line if `t` starts one.
pub(crate) fn host_key(t: Token, next: Option<Token>) -> Result<HostKey, KeyError> {
    if is_key_type(t.text) {
        return Err(plain_key_line(t, next));
    }
    let bytes = NIX_BASE64.decode(t.text).map_err(|e| not_base64(t, e))?;
    // Control characters mean binary data that merely happens to be valid UTF-8.
    let decoded = String::from_utf8(bytes.clone())
        .ok()
        .filter(|text| !text.trim_end_matches(BLANK).chars().any(char::is_control));
    match decoded.as_deref().map(|s| s.trim_end_matches(BLANK)) {
        Some(line) if line.split_whitespace().count() >= 2 => {
            Ok(HostKey { base64: t.text.to_owned(), line: line.to_owned() })
        }
        _ => Err(not_a_key_line(t, &bytes, decoded)),
    }
}

fn is_key_type(s: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| s.starts_with(p))
}

fn plain_key_line(t: Token, next: Option<Token>) -> KeyError {
    let (line, len) = match next {
        Some(n) => (format!("{} {}", t.text, n.text), n.at + n.text.len() - t.at),
        None => (t.text.to_owned(), t.text.len()),
    };
    KeyError {
        at: t.at,
        len,
        message: "host key column holds the key line itself; this column is its base64 \
                  encoding (a plain key line would split into two columns)"
            .to_owned(),
        fix: format!("write '{}' (the base64 of '{line}')", encode(&line)),
        plain: true,
    }
}

fn not_base64(t: Token, e: base64::DecodeError) -> KeyError {
    let is_bad = |c: char| !c.is_ascii_alphanumeric() && !"+/=".contains(c);
    match e {
        // Found here rather than from the decoder's offset, which may point into a character.
        _ if t.text.contains(is_bad) => {
            let (offset, bad) = t.text.char_indices().find(|&(_, c)| is_bad(c)).unwrap_or((0, '?'));
            KeyError::new(
                t.at + offset,
                bad.len_utf8(),
                format!("host key column is not valid base64: {bad:?} is not a base64 character"),
                "copy the whole base64 text again, without line breaks or extra characters".to_owned(),
            )
        }
        other => KeyError::of(
            t,
            format!("host key column is not valid base64 ({other})"),
            "copy the whole base64 text again; it may be cut short".to_owned(),
        ),
    }
}

/// Valid base64 of something else than a key line; `decoded` is its text, if it is text.
fn not_a_key_line(t: Token, bytes: &[u8], decoded: Option<String>) -> KeyError {
    match (bare_key_type(bytes), decoded) {
        (Some(ty), _) => {
            let line = format!("{ty} {}", t.text);
            KeyError::of(
                t,
                format!("host key column is the bare {ty} key blob, not the base64 of the whole key line '{ty} …'"),
                format!("write '{}' (the base64 of '{line}')", encode(&line)),
            )
        }
        (None, Some(text)) => KeyError::of(
            t,
            format!(
                "host key column decodes to '{}', not a key line 'TYPE KEY'",
                text.trim_end_matches(BLANK)
            ),
            ENCODE_FIX.to_owned(),
        ),
        (None, None) => KeyError::of(
            t,
            "host key column decodes to binary data, not a key line 'TYPE KEY'".to_owned(),
            ENCODE_FIX.to_owned(),
        ),
    }
}

/// The key blob alone (e.g. the second word of a .pub file) starts with the length-prefixed
/// key type: that type, if `bytes` is such a blob.
fn bare_key_type(bytes: &[u8]) -> Option<&str> {
    bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes[4..].get(..n))
        .and_then(|ty| std::str::from_utf8(ty).ok())
        .filter(|ty| is_key_type(ty))
}

/// Padded, as `base64 -w0` prints it, so a suggested value can be pasted as is.
fn encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}
