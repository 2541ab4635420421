//! Example policy `fastest-first`: the same eligibility rules and the same postpone/decline
//! fallback as the default, but it ranks the free eligible machines by declared speed factor
//! alone (fastest first; among equals the less loaded, then file order).
//!
//! Nix ranks by `load / speed-factor`, so a second build goes to an idle machine of speed 1
//! rather than to a machine of speed 4 that runs one build and has free slots. When each slot
//! of the fast machine builds at its full speed, that costs time; `nix-wasm-hook simulate
//! --policy fastest-first.wasm --against default` shows how much on a given cluster.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

struct FastestFirst;

impl wit::Guest for FastestFirst {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let (request, machines) = convert::from_wit(request, machines);
        let assessment = logic::assess(&request, &machines);
        let mut ranked = assessment.free.clone();
        // An insertion sort keeps equal machines in file order and the component small.
        for i in 1..ranked.len() {
            let mut j = i;
            while j > 0 && faster(&machines[ranked[j] as usize], &machines[ranked[j - 1] as usize]) {
                ranked.swap(j, j - 1);
                j -= 1;
            }
        }
        convert::to_wit(logic::answer_with(&request, &assessment, ranked))
    }
}

/// `a` goes before `b`: a higher speed factor, or the same and fewer builds running.
fn faster(a: &nwh_decision::MachineView, b: &nwh_decision::MachineView) -> bool {
    a.speed_factor > b.speed_factor || (a.speed_factor == b.speed_factor && a.slots_in_use < b.slots_in_use)
}

export!(FastestFirst);
