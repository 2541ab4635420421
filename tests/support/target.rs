//! A builder's target as the transfer sees it, for tests that never reach a real builder.

use nix_wasm_hook::transfer::target::{Protocol, Target, Via};

/// `ssh://HOST` with nothing else set: the serve protocol's `nix-store`, no key, no host key.
pub fn serve_target(host: &str) -> Target {
    Target {
        protocol: Protocol::Serve,
        via: Via::Ssh,
        user: None,
        host: host.into(),
        port: None,
        key: None,
        host_key: None,
        remote_program: "nix-store".into(),
        remote_store: None,
        compress: false,
    }
}
