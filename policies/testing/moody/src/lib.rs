//! Test policy `moody`: decides as the default policy does, except for a derivation whose name
//! holds `slow`, where it loops until the host stops it. Only those requests should fall back
//! to the default (with a warning each); the others are its own answers, just as fast.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

struct Moody;

impl wit::Guest for Moody {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        if request.drv_path.contains("slow") {
            let mut n: u64 = 0;
            loop {
                // black_box keeps the loop (and its fuel use) from being optimised away.
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        let (request, machines) = convert::from_wit(request, machines);
        convert::to_wit(logic::decide(&request, &machines))
    }
}

export!(Moody);
