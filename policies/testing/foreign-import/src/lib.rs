//! Test policy `foreign-import`: a component that exports the real policy interface
//! (`nix-wasm-hook:policy/policy@0.3.0`) but also **imports `evil:net/socket`**, an interface
//! outside WASI and outside our package (`wit/evil.wit`: `connect: func(host: string)`).
//! The host must refuse it at load, before instantiating, naming `evil:net/socket`.
//!
//! If a host ever did run it, `decide` calls `connect("evil.example")` and then declines,
//! rejecting every machine with "foreign-import called evil:net/socket.connect".
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "evil:net/foreign",
    // Our package first: the world in `wit/` refers to it.
    path: ["../../../wit", "wit"],
});

use exports::nix_wasm_hook::policy::policy as wit;

struct Foreign;

impl wit::Guest for Foreign {
    fn decide(_request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        // The call keeps the import in the component (unused imports are dropped).
        evil::net::socket::connect("evil.example");
        wit::Answer {
            decision: wit::Decision::Decline,
            rejected: (0..machines.len())
                .map(|i| wit::Rejection {
                    machine: u32::try_from(i).unwrap_or(u32::MAX),
                    reason: "foreign-import called evil:net/socket.connect".to_string(),
                })
                .collect(),
        }
    }
}

export!(Foreign);
