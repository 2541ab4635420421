//! Moves WIT records into [`logic`] types and back (no copies of strings or lists).
//!
//! Included with `#[path]` by every guest that uses `logic.rs`; the including module must
//! have `logic` (the logic module) and `wit` (the generated
//! `exports::nix_wasm_hook::policy::policy` module) in scope.

#![allow(dead_code)]

use super::{logic, wit};

pub fn from_wit(request: wit::Request, machines: Vec<wit::Machine>) -> (logic::Request, Vec<logic::Machine>) {
    let request = logic::Request {
        drv_path: request.drv_path,
        system: request.system,
        required_features: request.required_features,
        am_willing: request.am_willing,
        could_build_locally: request.could_build_locally,
    };
    let machines = machines
        .into_iter()
        .map(|m| logic::Machine {
            uri: m.uri,
            systems: m.systems,
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: m.supported_features,
            mandatory_features: m.mandatory_features,
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
            down_reason: m.down_reason,
        })
        .collect();
    (request, machines)
}

pub fn to_wit(answer: logic::Answer) -> wit::Answer {
    wit::Answer {
        decision: match answer.decision {
            logic::Decision::Try(order) => wit::Decision::Try(order),
            logic::Decision::Decline => wit::Decision::Decline,
            logic::Decision::Postpone => wit::Decision::Postpone,
        },
        rejected: answer
            .rejected
            .into_iter()
            .map(|r| wit::Rejection { machine: r.machine, reason: r.reason })
            .collect(),
    }
}
