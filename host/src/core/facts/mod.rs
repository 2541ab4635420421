//! Facts for the policy (contract 0.3): what the host knows of a machine beyond its line.
//!
//! * [`read`]: the kernel's own words (`/proc/loadavg`, `/proc/pressure/*`, the online CPUs)
//!   parsed and bounded; the same text comes from this machine's files and, next, from a
//!   builder over its SSH master, which is trusted for nothing it says here.
//! * [`local`]: the machine Nix runs on, measured when a request is asked of a policy;
//! * [`remote`]: a builder's report, one shell command's output, read (not yet run: the
//!   builders' facts are still absent, docs/status.md).
//!
//! A fact that cannot be read is absent, never zero.

pub mod local;
pub mod read;
pub mod remote;
