//! Test policy `spin`: `decide` never returns. It loops forever without allocating, so only
//! the host's fuel budget (or its epoch deadline) stops it: expect `Trap::OutOfFuel`
//! (or `Trap::Interrupt`).
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Spin;

impl wit::Guest for Spin {
    fn decide(_request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the loop (and its fuel use) from being optimised away.
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Spin);
