//! A store URI's query (`ssh://b1?remote-store=/x%3Fsystem-features=foo%20bar&…`) as Nix reads
//! it: `&`-separated `name=value` pairs, names and values percent-decoded (Nix 2.34 decodes
//! both; Nix 2.8 decoded only values, which is the same for every name Nix knows, since none
//! holds a character that needs escaping). A pair without `=` is ignored, as Nix ignores it (2.34
//! with a warning); when a name comes twice the first one counts, as in Nix's map of parameters.
//! `+` stays `+`: Nix does not read it as a space. A `%` not followed by two hexadecimal digits
//! is an error, as in Nix ("invalid URI parameter").

/// The URI without its query, and the query (empty when there is none).
pub fn split_query(uri: &str) -> (&str, &str) {
    uri.split_once('?').unwrap_or((uri, ""))
}

/// The parameters of `query`, decoded, in the order written, each name once (its first value).
pub fn query_params(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else { continue };
        let (name, value) = (percent_decode(name)?, percent_decode(value)?);
        if !params.iter().any(|(n, _)| *n == name) {
            params.push((name, value));
        }
    }
    Ok(params)
}

/// The decoded value of parameter `name` in `query`; none when it is absent or the query cannot
/// be read.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query_params(query).ok()?.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// `s` with its `%XX` escapes decoded.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            let Some(byte) = byte.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(format!(
                    "invalid URI parameter '{s}': '%' must be followed by two hexadecimal digits"
                ));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("invalid URI parameter '{s}': it decodes to bytes that are not UTF-8"))
}

/// `s` escaped for a query's name or value: everything but letters, digits and `-._~/:,` as
/// `%XX`, so that every Nix decodes it back to `s` (Nix 2.34 refuses some characters unescaped,
/// and `&`, `=`, `?`, `%`, `#` and spaces would change the query's meaning).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pairs` as a query, each name and value escaped ([`percent_encode`]).
pub fn encode_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_decoded_the_first_of_a_name_counts() {
        let params = query_params(
            "remote-store=/x%3Fsystem-features=foo%20bar&remote%2Dprogram=a+b&x&remote-store=/y",
        )
        .unwrap();
        assert_eq!(
            params,
            [
                ("remote-store".to_string(), "/x?system-features=foo bar".to_string()),
                ("remote-program".to_string(), "a+b".to_string()),
            ]
        );
        assert_eq!(query_param("a=%41%42&b=", "a").as_deref(), Some("AB"));
        assert_eq!(query_param("a=1&b=", "b").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn a_bad_escape_is_an_error() {
        for bad in ["a=%", "a=%4", "a=%zz", "a=%4g", "%=1", "a=%ff"] {
            assert!(query_params(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_decode("%c3%a9").unwrap(), "é");
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["/tmp/x", "foo bar", "a&b=c?d#e%f+g", "kvm,big-parallel", "é"] {
            assert_eq!(percent_decode(&percent_encode(s)).unwrap(), s);
        }
        assert_eq!(
            encode_query([("system-features", "foo bar"), ("root", "/r")]),
            "system-features=foo%20bar&root=/r"
        );
    }
}
