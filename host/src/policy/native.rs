//! The default policy's rules run natively, for when its Wasm cannot decide (it ran out of
//! fuel, memory or time on an input large enough): Nix must get an answer whatever the input,
//! and the rules are the same code (`policies/default/src/logic.rs`), compiled for the host.

use default_policy::logic;

use nwh_decision::{Answer, Choice, MachineView, Request};

/// What the default policy answers for `req` on `machines`, decided without Wasm.
pub fn decide(req: &Request, machines: &[MachineView]) -> Answer {
    let request = logic::Request {
        drv_path: req.drv_path.clone(),
        system: req.system.clone(),
        required_features: req.required_features.clone(),
        am_willing: req.am_willing,
        could_build_locally: req.could_build_locally,
    };
    let machines: Vec<logic::Machine> = machines
        .iter()
        .map(|m| logic::Machine {
            uri: m.uri.clone(),
            systems: m.systems.clone(),
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: m.supported_features.clone(),
            mandatory_features: m.mandatory_features.clone(),
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
            down_reason: m.down_reason.clone(),
        })
        .collect();
    let answer = logic::decide(&request, &machines);
    Answer {
        choice: match answer.decision {
            logic::Decision::Try(order) => Choice::Try(order),
            logic::Decision::Decline => Choice::Decline,
            logic::Decision::Postpone => Choice::Postpone,
        },
        rejected: answer.rejected.into_iter().map(|r| (r.machine, r.reason)).collect(),
    }
}
