//! The end-to-end tests on the project's test bed (testbed/): real Nix as the master (2.8,
//! and Debian's 2.26 and 2.34 in root file systems beside the host), SSH builders in network
//! and mount namespaces. One test bed at a time: its addresses are fixed, so these run one
//! after another (`--test-threads 1` is not needed: the test bed's lock serialises them). On a
//! machine without root or the test bed's programs they are marked ignored, with why
//! (host/build.rs).

#[allow(dead_code)]
mod support;

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
