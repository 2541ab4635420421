//! Moves WIT records into the decision model's types ([`nwh_decision`]) and back (no copies of
//! strings or lists).
//!
//! Included with `#[path]` by every guest that decides with [`nwh_decision::choice`]; the
//! including module must have `wit` (the generated `exports::nix_wasm_hook::policy::policy`
//! module) in scope.

#![allow(dead_code)]

use nwh_decision::{Answer, Decision, MachineView, Request};

use super::wit;

pub fn from_wit(request: wit::Request, machines: Vec<wit::Machine>) -> (Request, Vec<MachineView>) {
    let request = Request {
        drv_path: request.drv_path,
        system: request.system,
        required_features: request.required_features,
        am_willing: request.am_willing,
        could_build_locally: request.could_build_locally,
        // The rules need nothing of the local machine but what these two say.
        local: Default::default(),
    };
    let machines = machines
        .into_iter()
        .map(|m| MachineView {
            uri: m.uri,
            systems: m.systems,
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: m.supported_features,
            mandatory_features: m.mandatory_features,
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
            down_reason: m.down_reason,
            // The rules use none of contract 0.3's facts.
            facts: Default::default(),
        })
        .collect();
    (request, machines)
}

pub fn to_wit(answer: Answer) -> wit::Answer {
    wit::Answer {
        decision: match answer.decision {
            Decision::Try(order) => wit::Decision::Try(order),
            Decision::Decline => wit::Decision::Decline,
            Decision::Postpone => wit::Decision::Postpone,
        },
        rejected: answer
            .rejected
            .into_iter()
            .map(|(machine, reason)| wit::Rejection { machine, reason })
            .collect(),
    }
}
