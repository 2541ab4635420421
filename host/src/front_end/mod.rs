//! The front-ends: what reads Nix and answers it, each on its own protocol, driving the core
//! ([`crate::core`]) and the transfer ([`crate::transfer`]) through their functions.
//!
//! * [`hook`]: Nix's `build-hook` — the hook protocol on stdin and stderr ([`protocol`]), the
//!   build log on fd 4 ([`fds`]);
//! * [`builder_mode`]: builder mode — one builder of Nix's own hook, on the serve protocol.

pub mod builder_mode;
pub(crate) mod fds;
pub mod hook;
pub mod protocol;
