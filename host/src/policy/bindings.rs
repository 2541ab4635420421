//! Host bindings generated from `wit/policy.wit`. Kept in one place so that the rest of the
//! host never names generated paths; a later WIT minor version gets a sibling module here.

wasmtime::component::bindgen!({
    world: "policy-world",
    path: "../wit",
});

pub use exports::nix_wasm_hook::policy::policy::{Answer, Decision, Machine, Request};

/// The package and version this host was built against; the export a policy must provide.
pub const PACKAGE: &str = "nix-wasm-hook:policy";
pub const VERSION: &str = "0.1.0";
pub const INTERFACE: &str = "policy";
