//! Spellings of a sha256 NAR hash: Nix's base 32 (`nix32`, used in path infos as
//! `sha256:<52 chars>`), base 16 (what `AddToStoreNar` sends) and SRI base 64 (`sha256-…`).

/// Nix's base-32 alphabet: digits and letters without e, o, u, t.
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Encodes like Nix: the last character holds the lowest five bits, so the text reads as one
/// big little-endian number printed most significant digit first.
pub fn nix32_encode(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
        out.push(NIX32[usize::from((low | high) & 0x1f)] as char);
    }
    out
}

/// Decodes `s` into exactly `N` bytes, or `None` if it is not a valid spelling of that size.
pub fn nix32_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != (N * 8).div_ceil(5) {
        return None;
    }
    let mut out = [0u8; N];
    for (k, c) in s.bytes().enumerate() {
        let digit = NIX32.iter().position(|&a| a == c)? as u16;
        let n = s.len() - 1 - k;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let shifted = digit << j;
        out[i] |= shifted as u8;
        let carry = (shifted >> 8) as u8;
        if i + 1 < N {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

pub fn base16_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn base16_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Standard base 64 with its padding, as Nix writes it; trailing bits must be zero.
fn base64_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()?.try_into().ok()
}

/// Reads a sha256 in any spelling Nix accepts for one: `sha256:` followed by base 16,
/// nix32 or base 64, the same without prefix, or SRI `sha256-<base64>`.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if let Some(b64) = s.strip_prefix("sha256-") {
        return base64_decode(b64);
    }
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    match s.len() {
        64 => base16_decode(s),
        52 => nix32_decode(s),
        44 => base64_decode(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rejects_junk() {
        assert!(base64_decode::<32>("!".repeat(44).as_str()).is_none());
        assert!(base64_decode::<32>("A".repeat(43).as_str()).is_none());
        assert_eq!(base64_decode::<32>(&format!("{}=", "A".repeat(43))), Some([0; 32]));
        // Bits past the 256th that are not zero: another spelling of nothing Nix writes.
        assert!(base64_decode::<32>(&format!("{}B=", "A".repeat(42))).is_none());
        // Too short, though a valid base 64 string.
        assert!(base64_decode::<32>(&format!("{}=", "A".repeat(39))).is_none());
        assert!(base16_decode::<32>(&"g".repeat(64)).is_none());
        // Highest digit out of range for 256 bits.
        assert!(nix32_decode::<32>(&format!("z{}", "0".repeat(51))).is_none());
        assert!(nix32_decode::<32>(&format!("1{}", "0".repeat(51))).is_some());
        assert!(nix32_decode::<32>(&"e".repeat(52)).is_none());
    }
}
