//! The hermetic tests, in one binary (as ripgrep and wasmtime do): topic modules share the
//! support code and build once. They need no test bed; those that need root, a Nix root file
//! system or a policy only the test command builds are marked ignored, with why, where this
//! machine lacks it (host/build.rs). The test-bed tests are the `testbed` target.

#[allow(dead_code)]
mod support;

mod check;
mod daemon_trust;
mod decisions;
mod explain;
mod hook_mode;
mod local_builders;
mod other_languages;
mod policy_contract;
mod policy_limits;
mod private_dirs;
mod protocol;
mod replay;
mod simulate;
mod warm_keeper;
