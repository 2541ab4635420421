//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

mod common;

mod encodings;
mod golden;
mod real_nix;
mod realisations;
