//! Test policy `phantom`: answers `try [N]` where N = the number of machines, i.e. the index
//! one past the last machine (0 when the list is empty), and rejects every real machine with
//! the reason "phantom ranks only machine N". The host must treat the answer as invalid (an
//! index out of range) and let the default policy decide instead.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Phantom;

impl wit::Guest for Phantom {
    fn decide(_request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let n = u32::try_from(machines.len()).unwrap_or(u32::MAX);
        wit::Answer {
            decision: wit::Decision::Try(vec![n]),
            rejected: (0..n)
                .map(|i| wit::Rejection { machine: i, reason: format!("phantom ranks only machine {n}") })
                .collect(),
        }
    }
}

export!(Phantom);
