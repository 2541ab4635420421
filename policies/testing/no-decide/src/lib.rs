//! Test policy `no-decide`: exports `nix-wasm-hook:policy/policy@0.3.0` but without the
//! function `decide` (it has `decide-later`). The host must refuse it, naming the function.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "wit" });

struct NoDecide;

impl exports::nix_wasm_hook::policy::policy::Guest for NoDecide {
    fn decide_later() -> String {
        "never".into()
    }
}

export!(NoDecide);
