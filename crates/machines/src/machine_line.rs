//! One machine line: eight whitespace-separated columns (docs/machines-file.md §3, §4).
//!
//! Errors skip the line (Nix would abort the whole list instead); warnings keep it. Several
//! checks look for columns that slid by one, the usual cause of a confusing message elsewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Site, Token};
use crate::host_key::{host_key, KeyError, HOST_KEY_EXPECTED};
use crate::{existence, HostKey, Machine, Machines, Origin, ParseContext, BLANK};

const COLUMNS: &str = "URI systems ssh-key max-jobs speed-factor supported-features \
                       mandatory-features host-key";

/// Parse the machine line `entry`, found at byte `at` of the site's line, into `out`.
pub(crate) fn parse(site: &Site, at: usize, entry: &str, ctx: &ParseContext, out: &mut Machines) {
    let tokens = split(entry, at);
    let diags = &mut out.diagnostics;
    let errors_before = diags.iter().filter(|d| d.is_error()).count();

    warn_quotes(site, at, entry, diags);
    let uri = uri_column(site, &tokens, diags);
    warn_space_after_comma(site, &tokens, diags);
    let systems = column(&tokens, 1).map_or_else(|| vec![ctx.local_system.clone()], systems_column);
    let ssh_key = column(&tokens, 2).and_then(|t| ssh_key(site, t, ctx, diags));
    let max_jobs = column(&tokens, 3).map_or(1, |t| max_jobs_column(site, t, diags));
    let speed_factor = column(&tokens, 4).map_or(1.0, |t| speed_factor_column(site, t, diags));
    let supported_features = feature_set(column(&tokens, 5));
    let mandatory_features = feature_set(column(&tokens, 6));
    let lists = [
        (1, "systems", systems.len()),
        (5, "supported features", supported_features.len()),
        (6, "mandatory features", mandatory_features.len()),
    ];
    check_list_lengths(site, &tokens, lists, diags);
    let (host_key, plain_key_line) = host_key_column(site, &tokens, diags);
    if !plain_key_line {
        warn_extra_columns(site, &tokens, diags);
    }

    if diags.iter().filter(|d| d.is_error()).count() > errors_before {
        return;
    }
    out.machines.push(Machine {
        uri,
        systems,
        ssh_key,
        max_jobs,
        speed_factor,
        supported_features,
        mandatory_features,
        host_key,
        origin: Origin { location: site.location.to_owned(), line: site.line_no },
    });
}

/// Column `i` (from 0), if set. An unset column is missing, empty or exactly `-`.
fn column<'a>(tokens: &[Token<'a>], i: usize) -> Option<Token<'a>> {
    tokens.get(i).copied().filter(|t| t.text != "-")
}

fn warn_quotes(site: &Site, at: usize, entry: &str, diags: &mut Vec<Diagnostic>) {
    if let Some(q) = entry.find(['"', '\'', '`']) {
        let message = format!(
            "quote character {} in a machine line; quotes are taken literally here and in \
             nix.conf, so they become part of the URI, a system or a feature name",
            &entry[q..q + 1]
        );
        diags.push(
            site.warning(at + q, 1, message)
                .expected("unquoted columns separated by spaces")
                .fix("remove the quotes (in nix.conf too: builders = ssh://b1 x86_64-linux ; ssh://b2)"),
        );
    }
}

/// The normalised store URI; empty when the column is unset, which is an error.
fn uri_column(site: &Site, tokens: &[Token], diags: &mut Vec<Diagnostic>) -> String {
    match column(tokens, 0) {
        Some(t) => {
            let uri = normalise_uri(t.text);
            check_host(site, t, &uri, diags);
            uri
        }
        None => {
            let message = "store URI column is '-'; a machine line must start with the \
                           builder's address";
            diags.push(
                site.error(tokens[0].at, 1, message.to_owned())
                    .expected("a store URI such as 'ssh://nix@builder' or a host name")
                    .fix("put the builder's address in column 1: 'ssh://nix@builder x86_64-linux'"),
            );
            String::new()
        }
    }
}

/// The list columns (systems and features), where a space after a comma shifts every later
/// column.
fn warn_space_after_comma(site: &Site, tokens: &[Token], diags: &mut Vec<Diagnostic>) {
    for i in [1, 5, 6] {
        if let (Some(t), Some(next)) = (column(tokens, i), tokens.get(i + 1)) {
            if t.text.ends_with(',') {
                let message = format!(
                    "'{}' ends with ',' so the next word '{}' starts a new column: a space after \
                     a comma ends the list and shifts every later column",
                    t.text, next.text
                );
                diags.push(
                    site.warning(t.at, t.text.len(), message)
                        .expected("a comma-separated list without spaces")
                        .fix(format!("write '{}{}'", t.text, next.text)),
                );
            }
        }
    }
}

/// In the order written, without duplicates.
fn systems_column(t: Token) -> Vec<String> {
    let mut systems: Vec<String> = Vec::new();
    for s in t.text.split(',').filter(|s| !s.is_empty()) {
        if !systems.iter().any(|known| known == s) {
            systems.push(s.to_owned());
        }
    }
    systems
}

fn max_jobs_column(site: &Site, t: Token, diags: &mut Vec<Diagnostic>) -> u32 {
    match max_jobs(t.text) {
        Ok(n) => n,
        Err((message, fix)) => {
            diags.push(
                site.error(t.at, t.text.len(), message)
                    .expected("an unsigned integer (builds at once), or '-' for the default 1")
                    .fix(fix),
            );
            0
        }
    }
}

fn speed_factor_column(site: &Site, t: Token, diags: &mut Vec<Diagnostic>) -> f64 {
    match speed_factor(t.text) {
        Ok(f) => f,
        Err((message, fix)) => {
            diags.push(
                site.error(t.at, t.text.len(), message)
                    .expected("a number >= 0 (relative speed, e.g. 2 or 1.5), or '-' for the default 1")
                    .fix(fix),
            );
            1.0
        }
    }
}

fn feature_set(t: Option<Token>) -> BTreeSet<String> {
    t.map_or_else(BTreeSet::new, |t| t.text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

/// `lists` holds, per list column, its index, what it lists and how many it lists.
fn check_list_lengths(
    site: &Site,
    tokens: &[Token],
    lists: [(usize, &str, usize); 3],
    diags: &mut Vec<Diagnostic>,
) {
    for (i, what, n) in lists {
        if let Some(t) = column(tokens, i).filter(|_| n > crate::MAX_LIST) {
            diags.push(
                site.error(t.at, t.text.len(), format!("column {} lists {n} {what}", i + 1))
                    .expected(format!("at most {} (each is compared with every request)", crate::MAX_LIST))
                    .fix(format!("list only the {what} this machine has")),
            );
        }
    }
}

/// The host key, and whether the column held the plain key line (whose second word then is
/// no extra column to warn about).
fn host_key_column(site: &Site, tokens: &[Token], diags: &mut Vec<Diagnostic>) -> (Option<HostKey>, bool) {
    let Some(t) = column(tokens, 7) else {
        return (None, false);
    };
    match host_key(t, tokens.get(8).copied()) {
        Ok(key) => (Some(key), false),
        Err(KeyError { at, len, message, fix, plain }) => {
            diags.push(site.error(at, len, message).expected(HOST_KEY_EXPECTED).fix(fix));
            (None, plain)
        }
    }
}

fn warn_extra_columns(site: &Site, tokens: &[Token], diags: &mut Vec<Diagnostic>) {
    if tokens.len() <= 8 {
        return;
    }
    let first = tokens[8];
    let last = tokens[tokens.len() - 1];
    let extra = &site.text[first.at..last.at + last.text.len()];
    let message = format!("{} extra column(s) after the 8th are ignored: '{extra}'", tokens.len() - 8);
    diags.push(
        site.warning(first.at, extra.len(), message)
            .expected(format!("at most 8 columns: {COLUMNS}"))
            .fix("remove them; lists inside a column are comma-separated without spaces"),
    );
}

fn split(entry: &str, base: usize) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in entry.char_indices().chain(std::iter::once((entry.len(), ' '))) {
        match (start, BLANK.contains(&c)) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                tokens.push(Token { at: base + s, text: &entry[s..i] });
                start = None;
            }
            _ => {}
        }
    }
    tokens
}

/// Nix prepends `ssh://` unless the token already looks like a store URI or a local store.
fn normalise_uri(text: &str) -> String {
    let local = ["auto", "daemon", "local"];
    let is_store = text.contains("://")
        || text.contains('/')
        || local.contains(&text)
        || text.starts_with('?')
        || local.iter().any(|l| text.strip_prefix(l).is_some_and(|rest| rest.starts_with('?')));
    if is_store {
        text.to_owned()
    } else {
        format!("ssh://{text}")
    }
}

/// Warn about hosts that cannot be what the user meant.
fn check_host(site: &Site, t: Token, uri: &str, diags: &mut Vec<Diagnostic>) {
    diags.extend(uri_problem(site, t, uri).or_else(|| ssh_host_problem(site, t, uri)));
}

/// What is wrong with the store URI whatever its scheme.
fn uri_problem(site: &Site, t: Token, uri: &str) -> Option<Diagnostic> {
    let (at, len) = (t.at, t.text.len());
    if let Some(c) = uri.chars().find(|c| c.is_control()) {
        return Some(
            site.error(
                at,
                len,
                format!("store URI holds the control character {c:?}, which no host or user name can hold"),
            )
            .expected("a store URI of printable characters")
            .fix("remove the character (a file copied from elsewhere may carry it)"),
        );
    }
    if uri.len() > crate::MAX_URI_LEN {
        return Some(
            site.error(
                at,
                len,
                format!(
                    "store URI is {} bytes long; its slot lock files are named after it, and a file name holds at \
                     most 255 bytes",
                    uri.len()
                ),
            )
            .expected(format!("a store URI of at most {} bytes", crate::MAX_URI_LEN))
            .fix("use a shorter name: a Host alias in root's ~/.ssh/config can stand for a long host name"),
        );
    }
    if matches!(uri, "auto" | "daemon" | "local") {
        let message = format!(
            "'{uri}' is this machine's own Nix store; building there through the hook waits on \
             its own output locks and hangs (NixOS/nix#2029)"
        );
        return Some(
            site.warning(at, len, message)
                .expected("a remote machine")
                .fix("remove this line and raise 'max-jobs' to build locally"),
        );
    }
    None
}

/// The host and the query parameters of an `ssh://` or `ssh-ng://` URI.
fn ssh_host(uri: &str) -> Option<(&str, &str)> {
    let Some(("ssh" | "ssh-ng", rest)) = uri.split_once("://") else {
        return None;
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let params = rest.split_once('?').map_or("", |(_, p)| p);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..host_port.find(']').map_or(host_port.len(), |e| e + 1)]
    } else {
        &host_port[..host_port.find(':').unwrap_or(host_port.len())]
    };
    Some((host, params))
}

/// What is wrong with the host of an ssh store URI.
fn ssh_host_problem(site: &Site, t: Token, uri: &str) -> Option<Diagnostic> {
    let (at, len) = (t.at, t.text.len());
    let (host, params) = ssh_host(uri)?;
    let warning = |message: String| site.warning(at, len, message);
    let diagnostic = if host.is_empty() {
        site.error(at, len, format!("store URI '{uri}' names no host"))
            .expected("ssh://[user@]host[:port] or ssh-ng://[user@]host[:port]")
            .fix("write the builder's host name after '://'")
    } else if host.bytes().all(|b| b.is_ascii_digit()) {
        warning(format!(
            "host '{host}' is a bare number, so this line is the machine '{uri}'; that usually \
             comes from a stray number such as `builders = {host}`, and every build then waits \
             for a connection timeout"
        ))
        .expected("a host name or address, e.g. 'ssh://nix@builder1'")
        .fix(format!(
            "if you meant a job count, set 'max-jobs = {host}' instead of 'builders'; otherwise \
             write the builder's host name (ignore this if '{host}' is a Host alias in root's ssh config)"
        ))
    } else if host.starts_with('-') {
        warning(format!("host '{host}' starts with '-', so ssh takes it as an option, not as a host"))
            .expected(format!("the builder's host name first; the columns are: {COLUMNS}"))
            .fix("put the host name in column 1 and check the column order")
    } else if let Some(bad) = host.chars().find(|&c| !host_char(c, host.starts_with('['))) {
        if matches!(bad, '"' | '\'' | '`') {
            return None; // Already reported for the whole line.
        }
        warning(format!(
            "host '{host}' contains {bad:?}, which cannot be part of a host name; ssh will fail \
             to resolve it"
        ))
        .expected("a host name of letters, digits, '-' and '.', or an [IPv6] address")
        .fix("correct the host name")
    } else if matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        && crate::store_uri::query_param(params, "remote-store").is_none()
        && crate::builder_mode_program(uri).is_none()
    {
        warning(format!(
            "'{uri}' is this machine; with the same Nix store the build waits on its own output \
             locks and hangs (NixOS/nix#2029)"
        ))
        .expected("a remote machine")
        .fix(
            "remove this line and raise 'max-jobs' to build locally; to test remote building \
              against this machine, add '?remote-store=/path/to/another/store'",
        )
    } else {
        return None;
    };
    Some(diagnostic)
}

fn host_char(c: char, bracketed: bool) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '-' | '.' | '_')
        || (bracketed && matches!(c, '[' | ']' | ':' | '%'))
}

/// Why a token might be in the wrong column, to point at a missing or doubled column.
fn slid_column_hint(text: &str) -> Option<&'static str> {
    if text.contains('/') {
        Some("it looks like a path (the ssh key is column 3)")
    } else if ["-linux", "-darwin", "-freebsd", "-netbsd", "-openbsd"].iter().any(|s| text.contains(s)) {
        Some("it looks like a system type (column 2)")
    } else if text.contains(',') {
        Some("it looks like a list (features are columns 6 and 7)")
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        Some("it looks like a number (max-jobs is column 4, speed factor column 5)")
    } else {
        None
    }
}

fn with_hint(fix: String, text: &str) -> String {
    match slid_column_hint(text) {
        Some(hint) => format!(
            "{fix}; {hint}, so a column may be missing or doubled before it: write '-' for a \
             column you want to leave at its default"
        ),
        None => fix,
    }
}

/// Relative keys are rejected: ssh would resolve them against the hook's working directory.
fn ssh_key(site: &Site, t: Token, ctx: &ParseContext, diags: &mut Vec<Diagnostic>) -> Option<PathBuf> {
    let path = Path::new(t.text);
    if path.is_absolute() {
        if std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            let fix =
                format!("correct the path, or create the key: ssh-keygen -t ed25519 -N '' -f {}", t.text);
            diags.push(
                site.warning(t.at, t.text.len(), format!("ssh key '{}' does not exist", t.text))
                    .expected("a private key readable by the user running the hook (root under nix-daemon)")
                    .fix(fix),
            );
        }
        return Some(path.to_owned());
    }
    let resolved = ctx.cwd.join(path);
    let exists = existence(&resolved);
    let message = if t.text.starts_with('~') {
        format!(
            "ssh key '{}' starts with '~'; Nix ≥ 2.34 rejects it, older Nix leaves it to ssh, \
             which takes the home of the user running ssh (root's under nix-daemon, not yours)",
            t.text
        )
    } else {
        format!(
            "ssh key '{}' is a relative path; the build hook runs with its working directory at \
             '{}', so ssh would read '{}' ({exists})",
            t.text,
            ctx.cwd.display(),
            resolved.display()
        )
    };
    let fix = format!("write the key's absolute path (run `realpath {}` as the key's owner)", t.text);
    diags.push(
        site.error(t.at, t.text.len(), message)
            .expected("an absolute path to the private key, or '-' for ssh's default keys")
            // A path-like token is in its own column; anything else may have slid here.
            .fix(if t.text.contains('/') { fix } else { with_hint(fix, t.text) }),
    );
    None
}

/// Err is (message, fix).
fn max_jobs(text: &str) -> Result<u32, (String, String)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(text) {
        return match text.parse::<u32>() {
            Ok(n) if n <= crate::MAX_JOBS => Ok(n),
            _ => Err((
                format!("max-jobs column is '{text}', more than the {} builds at once this hook takes on one machine", crate::MAX_JOBS),
                format!("use at most {}", crate::MAX_JOBS),
            )),
        };
    }
    if text.strip_prefix('-').is_some_and(digits) {
        return Err((
            format!("max-jobs column is '{text}', which is negative"),
            "use 0 or more ('-' alone means the default 1; 0 means never use this machine)".to_owned(),
        ));
    }
    if text.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err((
            format!("max-jobs column is '{text}', not a whole number"),
            format!(
                "write a whole number of builds, e.g. '{}'",
                text.parse::<f64>().unwrap_or(1.0).floor().max(0.0)
            ),
        ));
    }
    Err((
        format!("max-jobs column is '{text}', not a whole number"),
        with_hint("write the number of builds to run at once in digits, e.g. '4'".to_owned(), text),
    ))
}

/// Err is (message, fix). Nix ≥ 2.20 reads a float; 0 means the default.
fn speed_factor(text: &str) -> Result<f64, (String, String)> {
    match text.parse::<f64>() {
        Ok(f) if !f.is_finite() => Err((
            format!("speed factor column is '{text}', not a finite number"),
            "write a number such as '2' or '1.5' (bigger means preferred)".to_owned(),
        )),
        Ok(f) if f < 0.0 => Err((
            format!(
                "speed factor column is '{text}', which is negative (Nix: \"speed factor must be >= 0\")"
            ),
            "use a number >= 0 ('-' alone means the default 1)".to_owned(),
        )),
        Ok(f) => Ok(if f == 0.0 { 1.0 } else { f }),
        Err(_) => Err((
            format!("speed factor column is '{text}', not a number"),
            with_hint("write a number such as '2' or '1.5' (bigger means preferred)".to_owned(), text),
        )),
    }
}
