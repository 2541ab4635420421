//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

mod common;

mod big_file;
mod copy;
mod dump;
mod export;
mod export_reader;
