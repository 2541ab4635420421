//! Host bindings generated from the WIT contract, one module per version the host speaks, so
//! that a policy built for an older version runs with that version's types (wasmCloud keeps
//! its versions side by side the same way). They check a component against its version when
//! it is loaded; the calls pass the host's own types (`params`). The rest of the host never
//! names generated paths.

pub mod v0_3 {
    wasmtime::component::bindgen!({ world: "policy-world", path: "../wit" });
}

pub mod v0_2 {
    wasmtime::component::bindgen!({ world: "policy-world", path: "../wit/versions/0.2.0" });
}

pub mod v0_1 {
    wasmtime::component::bindgen!({ world: "policy-world", path: "../wit/versions/0.1.0" });
}

/// The package every policy exports its interface from.
pub const PACKAGE: &str = "nix-wasm-hook:policy";
pub const INTERFACE: &str = "policy";
/// The current version (what `wit/policy.wit` declares).
pub const VERSION: &str = "0.3.0";
/// Every `major.minor` the host runs, newest first.
pub const SUPPORTED: &[&str] = &["0.3", "0.2", "0.1"];
