//! A policy template: send each build to the fitting machine with the fewest builds in
//! progress per unit of speed, like Nix, but never to a machine whose name contains "slow"
//! unless nothing else fits. Change `decide` to make it yours.

// The contract: this repository's wit/ (copy wit/policy.wit into ./wit and change the path
// when you take the template out of the repository).
wit_bindgen::generate!({ world: "policy-world", path: "../../wit" });

use exports::nix_wasm_hook::policy::policy::{Answer, Decision, Guest, Machine, Rejection, Request};

struct MyPolicy;

/// Why `m` cannot take `r` now, or None when it can. The host checks these rules too: a
/// policy that ranks a machine breaking them is overruled by the default policy.
fn unfit(r: &Request, m: &Machine) -> Option<String> {
    if !m.enabled {
        return Some(format!("down: {}", m.down_reason.clone().unwrap_or_default()));
    }
    if r.system != "builtin" && !m.systems.contains(&r.system) {
        return Some(format!("does not build {}", r.system));
    }
    if let Some(f) = r.required_features.iter().find(|f| !m.supported_features.contains(f) && !m.mandatory_features.contains(f)) {
        return Some(format!("lacks feature {f}"));
    }
    if let Some(f) = m.mandatory_features.iter().find(|f| !r.required_features.contains(f)) {
        return Some(format!("only takes builds that require {f}"));
    }
    if m.slots_in_use >= m.max_jobs {
        return Some("busy".into());
    }
    None
}

impl Guest for MyPolicy {
    fn decide(request: Request, machines: Vec<Machine>) -> Answer {
        let mut fitting: Vec<(u32, f64, bool)> = Vec::new();
        let mut rejected = Vec::new();
        for (i, m) in machines.iter().enumerate() {
            let i = i as u32;
            match unfit(&request, m) {
                Some(reason) => rejected.push(Rejection { machine: i, reason }),
                None => fitting.push((i, f64::from(m.slots_in_use) / m.speed_factor, m.uri.contains("slow"))),
            }
        }
        // Stable sort: ties keep the order of the machines file, as in Nix.
        fitting.sort_by(|a, b| a.2.cmp(&b.2).then(a.1.total_cmp(&b.1)));
        if fitting.is_empty() {
            let busy = machines.iter().any(|m| m.enabled && m.max_jobs > 0 && unfit(&request, m).as_deref() == Some("busy"));
            let decision = if busy && !(request.am_willing && request.could_build_locally) {
                Decision::Postpone
            } else {
                Decision::Decline
            };
            return Answer { decision, rejected };
        }
        Answer { decision: Decision::Try(fitting.iter().map(|f| f.0).collect()), rejected }
    }
}

export!(MyPolicy);
