//! The core: for one derivation, a builder and its held slot, whichever front-end asks. It
//! knows no front-end: what Nix sent comes in as settings and a request, the answer goes out as
//! a placement, and what it says goes through [`log::Logger`].
//!
//! * [`dispatch`] drives one placement; [`schedule`] measures the slots, asks the policy,
//!   checks its answer and takes a slot; [`policy`] runs the components (wasmtime);
//! * [`settings`]: `nix.conf`, the settings block and the machines they name;
//! * [`trace`]: one record per decision; [`timeline`]: when each step happened;
//! * [`facts`]: what a policy of contract 0.3 is told beyond the machines file;
//! * [`log`]: Nix's log format; [`hints`]: "did you mean"; [`nix_release`]: what the parent's
//!   release does differently; [`stop`]: SIGTERM; [`state_dir`]: the state directory.

pub mod dispatch;
pub mod facts;
pub mod hints;
pub mod log;
pub mod nix_release;
pub mod policy;
pub mod schedule;
pub mod settings;
pub mod state_dir;
pub mod stop;
pub mod timeline;
pub mod trace;
