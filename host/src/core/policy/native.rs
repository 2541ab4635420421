//! The default policy's rules run natively, for when its Wasm cannot decide (it ran out of
//! fuel, memory or time on an input large enough): Nix must get an answer whatever the input,
//! and the rules are the same code ([`nwh_decision::choice`], which the default component is
//! built from), compiled for the host.

use nwh_decision::{Answer, MachineView, Request};

/// What the default policy answers for `req` on `machines`, decided without Wasm.
pub fn decide(req: &Request, machines: &[MachineView]) -> Answer {
    nwh_decision::choice::decide(req, machines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default's words for a machine it leaves out are the host's own (`why_not`), for
    /// every kind of misfit and their combinations: one "why not" in every output.
    #[test]
    fn the_default_rejects_in_the_hosts_words() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut machines = Vec::new();
        for (enabled, down_reason) in
            [(true, None), (false, None), (false, Some("cannot connect to 'b': refused"))]
        {
            for systems in [&["x86_64-linux"][..], &["aarch64-linux", "i686-linux"], &[]] {
                for (supported, mandatory) in
                    [(&["kvm"][..], &[][..]), (&[], &["big"]), (&["kvm", "big"], &[])]
                {
                    for (max_jobs, in_use) in [(2, 0), (2, 2), (1, 1), (0, 0), (2, 5)] {
                        machines.push(MachineView {
                            uri: format!("ssh://m{}", machines.len()),
                            systems: strings(systems),
                            max_jobs,
                            speed_factor: 1.0,
                            supported_features: strings(supported),
                            mandatory_features: strings(mandatory),
                            slots_in_use: in_use,
                            enabled,
                            down_reason: down_reason.map(str::to_string),
                            facts: Default::default(),
                        });
                    }
                }
            }
        }
        for features in [&[][..], &["kvm"], &["kvm", "big"], &["nope"]] {
            for system in ["x86_64-linux", "builtin"] {
                let req = Request {
                    drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
                    system: system.into(),
                    required_features: strings(features),
                    am_willing: true,
                    could_build_locally: false,
                    local: Default::default(),
                };
                let answer = decide(&req, &machines);
                for (i, m) in machines.iter().enumerate() {
                    let misfits = nwh_decision::misfits(&req, m);
                    match answer.reason_for(i as u32) {
                        Some(given) => assert_eq!(given, nwh_decision::why_not(&req, m, None), "{m:?}"),
                        None => assert!(misfits.is_empty(), "{m:?} left out without a reason: {misfits:?}"),
                    }
                }
            }
        }
    }
}
