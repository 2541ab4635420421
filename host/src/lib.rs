//! nix-wasm-hook: a Nix build hook whose choice of build machine is made by a sandboxed
//! WebAssembly policy.
//!
//! The tree is the design (docs/architecture.md has the map):
//!
//! * [`front_end`]: what reads Nix and answers it — the hook ([`front_end::hook`], on the hook
//!   protocol) and the builder ([`front_end::builder_mode`], on the serve protocol);
//! * [`core`]: one derivation to a builder — settings, slots, the policy, the trace;
//! * [`transfer`]: the build on the builder, and its outputs back into the local store;
//! * [`tools`]: `check`, `explain`, `replay`, `simulate`, for people, on the same core.
//!
//! Data flows one way: Nix → a front-end → ([`core::settings`], machines, slots) →
//! [`core::policy`] → the front-end's answer → [`transfer`] → Nix. Only the front-ends and
//! [`cli`] touch the process's stdin and stderr, and only [`core::policy`] knows wasmtime.
//!
//! # Glossary
//!
//! One name per idea, from Nix's request to the build's end:
//!
//! * **Parent**: the Nix that runs the hook (its `build-hook`), or whose own hook runs our
//!   builder front-end; the hook's **conversation** with it ([`front_end::protocol::Conversation`]).
//! * **Builder**: a machine that builds, a line of the machines file (**Machine**,
//!   [`nwh_machines::Machine`]); **builder mode** ([`front_end::builder_mode`]): ours as one
//!   builder of Nix's own hook, dispatching to real builders.
//! * **Request** ([`nwh_decision::Request`]): one derivation to be built somewhere — Nix's
//!   `try` message (**offer**, before the scheduler adds whether the parent could build it
//!   itself), and what a policy is asked. (A command of the serve protocol is a
//!   [`nwh_serve::ServeRequest`].)
//! * **MachineView** ([`nwh_decision::MachineView`]): a machine as a policy sees it, with its
//!   slots in use and whether it can be used now.
//! * **Down**: a machine that cannot be used now, with the reason (ssh's words, or why its
//!   line cannot work): `enabled = false` and `down-reason` in the policy's view, the
//!   scheduler's `down`, [`transfer::health`]'s record shared across processes,
//!   [`nwh_decision::Misfit::Down`].
//! * **LocalMachine** ([`nwh_decision::LocalMachine`]): what the parent itself can build. (The
//!   **local store** is [`transfer::local_store::LocalStore`]: where outputs go.)
//! * **LocalView** ([`nwh_decision::LocalView`], WIT `local-machine`): the machine Nix runs on
//!   as a policy sees it, a candidate with its speed and facts.
//! * **Facts** ([`nwh_decision::Facts`], WIT `facts`, contract 0.3): what the host knows of a
//!   machine beyond its line, each optional and with its age.
//! * **Decision** ([`nwh_decision::Decision`], WIT `decision`): try these machines in this
//!   order, decline, or postpone. **Answer** ([`nwh_decision::Answer`]): a policy's decision
//!   and its reason for each machine it left out. **Decided** ([`core::policy::Decided`]): the
//!   answer the hook acts on, with who gave it ([`nwh_decision::DecidedBy`]), its cost, and the
//!   warning when the default stood in. **Nix's choice** ([`nwh_decision::choice`]): the
//!   default policy's decision.
//! * **Misfit** ([`nwh_decision::Misfit`]): a rule of Nix's a machine breaks for a request, or
//!   its lack of a free slot; **why not** ([`nwh_decision::why_not`]): the one sentence every
//!   output gives for a machine that was not chosen.
//! * **Placement** ([`core::schedule::Placement`]): where a request goes — declined, postponed,
//!   or **Placed** on a machine with its slot held (and, once the dispatcher has connected, its
//!   connection); what the hook tells Nix and what the builder front-end builds on.
//!   **Scheduled** ([`core::schedule::Scheduled`]): a placement with what it was decided on, as
//!   the trace records it.
//! * **Connection** ([`transfer::ssh::Connection`]): how a builder is reached — an SSH master
//!   (ssh's ControlMaster process, shared across hooks) or, for a builder on this machine, its
//!   store program started here.
//! * **Session** ([`transfer::BuilderSession`]): one conversation with a builder's store program
//!   (`nix-store --serve`, `nix-daemon --stdio`), for one build; a **warm** session is one the
//!   keeper ([`transfer::warm`]) keeps open between builds and lends.
//! * **Upload**, **bring back**, **register**: inputs sent to the builder; outputs fetched from
//!   it and unpacked here; made valid in the local store ([`transfer::register`]).
//! * **Finished** ([`transfer::Finished`]): how a remote build ended, as Nix must learn it.
//! * **Outcome** ([`nwh_trace::Outcome`]): what the hook did with an answer, as a decision
//!   trace records it.
//! * **Verdict** (`explain`): where `explain` says a derivation would go.
//! * **Level** ([`core::log::Level`]): Nix's verbosity levels, for everything the hook says.

pub mod cli;
pub mod core;
pub mod front_end;
pub mod tools;
pub mod transfer;
