//! Test policy `trap`: `decide` panics. Guests build with `panic = "abort"`, so the host sees
//! a `Trap::UnreachableCodeReached` (a bare `unreachable`, no message).
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Trap;

impl wit::Guest for Trap {
    fn decide(request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        panic!("trap policy: deliberate panic deciding {}", request.drv_path)
    }
}

export!(Trap);
