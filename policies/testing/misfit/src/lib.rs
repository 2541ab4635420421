//! Test policy `misfit`: answers `try [i]` with a machine that does not fit the request, so
//! the host must treat the answer as invalid and let the default policy decide instead.
//!
//! `i` is the first machine (file order) that is not eligible (wrong system, missing or
//! unmet mandatory feature, or disabled); if every machine is eligible, the first one with no
//! free slot. Every other machine gets the default policy's rejection reason. If every
//! machine fits (eligible with a free slot), there is nothing to misfit and it answers
//! `decline`, rejecting every machine with "misfit found no machine that does not fit".
//! Test it with a request where machine 0 has the wrong system: the answer is `try [0]`.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

struct Misfit;

impl wit::Guest for Misfit {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let (request, machines) = convert::from_wit(request, machines);
        let assessment = logic::assess(&request, &machines);
        let unfit = assessment.fits.iter().position(|f| matches!(f, logic::Fit::Unfit { .. }));
        let full = assessment.fits.iter().position(|f| matches!(f, logic::Fit::Full { .. }));
        match unfit.or(full) {
            Some(i) => convert::to_wit(logic::answer_with(&request, &assessment, vec![i as u32])),
            None => wit::Answer {
                decision: wit::Decision::Decline,
                rejected: (0..machines.len() as u32)
                    .map(|i| wit::Rejection {
                        machine: i,
                        reason: "misfit found no machine that does not fit".to_string(),
                    })
                    .collect(),
            },
        }
    }
}

export!(Misfit);
