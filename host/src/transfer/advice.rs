//! What to do about ssh's failure to reach a builder. ssh's own words are exact but assume
//! the reader knows who ran ssh: under the Nix daemon it is root, with root's keys and
//! `known_hosts`, in a process without a terminal, which is the cause users miss most.

use super::target::Target;

/// A sentence naming the likely cause and the fix, for the failures users meet most
/// (docs/hook-protocol.md §2, who the hook runs as); `None` when ssh's words are all there is to say.
pub fn advice(ssh_said: &str, target: &Target) -> Option<String> {
    let uid = rustix::process::geteuid().as_raw();
    let who =
        if uid == 0 { "root (uid 0), as under the Nix daemon".to_string() } else { format!("uid {uid}") };
    let host = target.display();
    let said = ssh_said.to_ascii_lowercase();
    if said.contains("host key verification failed") || said.contains("host key is known for") {
        return Some(format!(
            "the host key of {host} is not known to the user ssh ran as, {who}: ssh reads that \
             user's ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts, not yours. Fix: put the \
             builder's key in column 8 of its machines line (`ssh-keyscan -t ed25519 {} | cut -d' ' \
             -f2- | base64 -w0`), or accept it once as that user (`sudo ssh {host} true`)",
            target.host
        ));
    }
    if said.contains("connection refused") {
        return Some(format!(
            "nothing accepts connections on port {} of {}: is sshd running there, and is the port \
             in the URI right?",
            target.port.unwrap_or(22),
            target.host
        ));
    }
    if said.contains("permission denied") {
        let key = match &target.key {
            Some(k) => format!("the key in column 3 ({})", k.display()),
            None => "that user's default keys (column 3 names none)".into(),
        };
        return Some(format!(
            "{host} refused the login: ssh ran as {who} and offered {key}; the builder must list its \
             public key in the remote user's ~/.ssh/authorized_keys, and the key must have no \
             passphrase (there is no terminal and no agent)"
        ));
    }
    if said.contains("could not resolve hostname") {
        return Some(format!("`{}` is not a host name this machine can resolve", target.host));
    }
    if said.contains("timed out") {
        return Some(format!(
            "{host} did not answer in time: is it up (a VM still booting?), and does a firewall let \
             port {} through?",
            target.port.unwrap_or(22)
        ));
    }
    None
}
