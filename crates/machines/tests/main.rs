//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

mod common;

mod diagnostics;
mod fixtures;
mod includes;
mod robustness;
mod valid;
