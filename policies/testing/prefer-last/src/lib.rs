//! Test policy `prefer-last`: a valid policy that differs from the default. It uses the same
//! eligibility rules and the same postpone/decline fallback as the default policy, but ranks
//! the eligible machines with a free slot **last-listed first**, ignoring load and speed.
//! With two idle, equal machines the default answers `try [0, 1]` and this one `try [1, 0]`,
//! which shows that `--policy` changes the choice.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

struct PreferLast;

impl wit::Guest for PreferLast {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let (request, machines) = convert::from_wit(request, machines);
        let assessment = logic::assess(&request, &machines);
        let mut ranked = assessment.free.clone();
        ranked.reverse();
        convert::to_wit(logic::answer_with(&request, &assessment, ranked))
    }
}

export!(PreferLast);
