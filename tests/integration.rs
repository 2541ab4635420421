//! One integration-test binary (as ripgrep and wasmtime do): topic modules share the support
//! code and build once.

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
mod testbed_build;
mod testbed_builder;
mod testbed_check;
mod testbed_decide;
mod testbed_diagnose;
mod testbed_faults;
mod testbed_floating;
mod testbed_hostile;
mod testbed_load;
mod testbed_smoke;
mod testbed_ssh_ng;
mod testbed_store;
mod testbed_transfer;
mod warm_keeper;
