//! nix-wasm-hook: a Nix build hook whose choice of build machine is made by a sandboxed
//! WebAssembly policy.
//!
//! Data flows one way: Nix → [`protocol`] → ([`settings`], machines, slots) → [`policy`] →
//! [`protocol`] reply → [`transfer`] → Nix. Only `protocol` and `cli` touch the process's
//! stdin and stderr, and only `policy` knows wasmtime.

pub mod builder;
pub mod check;
pub mod cli;
pub mod dispatch;
pub mod explain;
mod fds;
pub mod hints;
pub mod hook;
pub mod log;
pub mod nix_release;
pub mod policy;
pub mod protocol;
pub mod replay;
pub mod schedule;
pub mod settings;
pub mod simulate;
pub mod timeline;
pub mod tool;
pub mod trace;
pub mod transfer;
