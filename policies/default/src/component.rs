//! wit-bindgen glue (wasm32 only): WIT types in, Nix's choice ([`nwh_decision::choice`]) in
//! the middle, WIT out.

// Contract 0.2: the default decides with Nix's rules alone, and needs none of 0.3's facts,
// which would only make each call lower more.
wit_bindgen::generate!({ world: "policy-world", path: "../../wit/versions/0.2.0" });

use self::exports::nix_wasm_hook::policy::policy as wit;

// Shared with the test policies, which include the same file.
#[path = "convert.rs"]
mod convert;

struct DefaultPolicy;

impl wit::Guest for DefaultPolicy {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let (request, machines) = convert::from_wit(request, machines);
        convert::to_wit(nwh_decision::choice::decide(&request, &machines))
    }
}

export!(DefaultPolicy);
