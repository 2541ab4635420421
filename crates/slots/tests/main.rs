//! The crate's one test binary: each topic a module, sharing the helpers in `common`.

mod locks;
mod queue;
