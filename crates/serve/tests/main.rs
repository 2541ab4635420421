//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

#[macro_use]
mod common;

mod captures;
mod golden;
mod real_nix;
mod server;
