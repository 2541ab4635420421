//! Test policy `future-major`: built for version 1.0.0 of the contract, which no host speaks
//! yet (its WIT here is the current one with the version changed). The host must refuse it at
//! load, naming its version and the ones the host speaks.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct FutureMajor;

impl wit::Guest for FutureMajor {
    fn decide(_request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        wit::Answer { decision: wit::Decision::Decline, rejected: vec![] }
    }
}

export!(FutureMajor);
