//! Test policy `flood`: answers far more than it was asked. For a derivation whose name holds
//! `reason` it rejects machine 0 with one reason of 100 MiB; for any other, it declines with a
//! million rejections. The host must refuse the answer (or the memory limit stops the policy
//! first), warn once and let the default decide, without holding much more than the policy's
//! own memory.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Flood;

impl wit::Guest for Flood {
    fn decide(request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        let rejected = if request.drv_path.contains("reason") {
            vec![wit::Rejection { machine: 0, reason: "x".repeat(100 << 20) }]
        } else {
            (0..1_000_000).map(|i| wit::Rejection { machine: i, reason: "flood".into() }).collect()
        };
        wit::Answer { decision: wit::Decision::Decline, rejected }
    }
}

export!(Flood);
