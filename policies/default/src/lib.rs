//! nix-wasm-hook's default scheduling policy: Nix's own choice of build machine.
//!
//! The decision logic lives in [`logic`], plain Rust that also builds and is tested natively
//! (`cargo test` in `policies/`). On wasm32 a thin layer of wit-bindgen glue (`component.rs`)
//! exports it as the `nix-wasm-hook:policy/policy@0.2.0` interface of `wit/policy.wit`; the
//! xtask turns the wasm32-unknown-unknown core module into `policies/default/default.wasm`,
//! a component with no imports at all.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod bump;
#[cfg(target_arch = "wasm32")]
mod component;
