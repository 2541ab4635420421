//! nix-wasm-hook's default scheduling policy: Nix's own choice of build machine.
//!
//! The decision is [`nwh_decision::choice::decide`], the crate the host decides with (and
//! tests natively); on wasm32 a thin layer of wit-bindgen glue (`component.rs`) exports it as
//! the `nix-wasm-hook:policy/policy@0.2.0` interface of `wit/versions/0.2.0/policy.wit`; the xtask turns the
//! wasm32-unknown-unknown core module into `policies/default/default.wasm`, a component with no
//! imports at all.

#[cfg(target_arch = "wasm32")]
mod bump;
#[cfg(target_arch = "wasm32")]
mod component;
