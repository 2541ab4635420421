//! "Did you mean …?": the nearest known word to a misspelt one, for workload names, systems
//! and features (a feature no machine has is the commonest silent misconfiguration).

use std::collections::BTreeSet;

use nwh_decision::{LocalMachine, MachineView, Request};

/// The known word closest to `wanted`, when it is close enough to be a likely typo.
pub fn nearest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .filter(|k| *k != wanted)
        .map(|k| (strsim::levenshtein(wanted, k), k))
        .filter(|&(d, k)| d <= 2.max(k.chars().count() / 4))
        .min()
        .map(|(_, k)| k)
}

/// One line per system or required feature that no machine, and not the local one, has —
/// with the nearest one some machine does have, when there is one.
pub fn unknown_words(req: &Request, machines: &[MachineView], local: &LocalMachine) -> Vec<String> {
    let mut hints = Vec::new();
    let mut systems: BTreeSet<&str> =
        machines.iter().flat_map(|m| m.systems.iter().map(String::as_str)).collect();
    systems.insert(&local.system);
    systems.extend(local.extra_platforms.iter().map(String::as_str));
    if req.system != "builtin" && !systems.contains(req.system.as_str()) {
        hints.push(with_suggestion(
            format!("no machine builds system `{}`", req.system),
            nearest(&req.system, systems.iter().copied()),
        ));
    }
    let features: BTreeSet<&str> = machines
        .iter()
        .flat_map(|m| m.supported_features.iter().chain(&m.mandatory_features).map(String::as_str))
        .chain(local.features.iter().map(String::as_str))
        .collect();
    for f in &req.required_features {
        if !features.contains(f.as_str()) {
            hints.push(with_suggestion(
                format!("no machine supports the required feature `{f}`"),
                nearest(f, features.iter().copied()),
            ));
        }
    }
    hints
}

fn with_suggestion(text: String, nearest: Option<&str>) -> String {
    match nearest {
        Some(n) => format!("{text}; did you mean `{n}`?"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_word() {
        assert_eq!(nearest("big-paralel", ["kvm", "big-parallel", "benchmark"]), Some("big-parallel"));
        assert_eq!(nearest("kvmm", ["kvm", "nixos-test"]), Some("kvm"));
        assert_eq!(nearest("x86_64-linx", ["x86_64-linux", "aarch64-linux"]), Some("x86_64-linux"));
        assert_eq!(nearest("cuda", ["kvm", "nixos-test"]), None, "nothing close: no guess");
    }

    #[test]
    fn only_words_nothing_has_are_named() {
        let local = LocalMachine {
            max_jobs: 0,
            system: "x86_64-linux".into(),
            extra_platforms: vec!["i686-linux".into()],
            features: ["nixos-test".to_string()].into(),
        };
        let m = MachineView {
            uri: "ssh://b".into(),
            systems: vec!["aarch64-linux".into()],
            max_jobs: 1,
            speed_factor: 1.0,
            supported_features: vec!["kvm".into()],
            mandatory_features: vec!["big-parallel".into()],
            slots_in_use: 0,
            enabled: true,
            down_reason: None,
            facts: Default::default(),
        };
        let req = |system: &str, features: &[&str]| Request {
            drv_path: "/nix/store/x.drv".into(),
            system: system.into(),
            required_features: features.iter().map(|f| f.to_string()).collect(),
            am_willing: false,
            could_build_locally: false,
            local: Default::default(),
        };
        assert!(unknown_words(
            &req("i686-linux", &["kvm", "big-parallel", "nixos-test"]),
            std::slice::from_ref(&m),
            &local
        )
        .is_empty());
        assert_eq!(
            unknown_words(&req("aarch64-linx", &["kvmm", "cuda"]), &[m], &local),
            [
                "no machine builds system `aarch64-linx`; did you mean `aarch64-linux`?",
                "no machine supports the required feature `kvmm`; did you mean `kvm`?",
                "no machine supports the required feature `cuda`",
            ]
        );
    }
}
