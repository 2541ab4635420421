//! Test policy `old-minor`: built against version 0.1.0 of the contract
//! (`wit/versions/0.1.0`), before `machine.down-reason` existed. A host that speaks 0.2.0 must
//! still load and run it. It ranks the fitting machines with a free slot last-listed first
//! (unlike the default), so a test can tell that it, not the default, decided.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit/versions/0.1.0" });

use exports::nix_wasm_hook::policy::policy as wit;

struct OldMinor;

fn fits(r: &wit::Request, m: &wit::Machine) -> bool {
    m.enabled
        && (r.system == "builtin" || m.systems.contains(&r.system))
        && r.required_features
            .iter()
            .all(|f| m.supported_features.contains(f) || m.mandatory_features.contains(f))
        && m.mandatory_features.iter().all(|f| r.required_features.contains(f))
        && m.slots_in_use < m.max_jobs
}

impl wit::Guest for OldMinor {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let mut ranked = Vec::new();
        let mut rejected = Vec::new();
        for (i, m) in machines.iter().enumerate().rev() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if fits(&request, m) {
                ranked.push(i);
            } else {
                rejected.push(wit::Rejection { machine: i, reason: "does not fit (old-minor)".into() });
            }
        }
        let decision = if ranked.is_empty() { wit::Decision::Decline } else { wit::Decision::Try(ranked) };
        wit::Answer { decision, rejected }
    }
}

export!(OldMinor);
