//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

mod common;

mod captures;
mod errors;
mod roundtrip;
mod spec_example;
