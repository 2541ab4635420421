//! The decision table, tests/fixtures/decisions.toml: requests with the answer Nix's algorithm
//! gives. tests/decisions.rs runs it through the whole host; tests/other_languages.rs gives
//! its inputs to the policies in other languages directly.

use std::collections::BTreeSet;
use std::path::Path;

use nwh_decision::LocalMachine;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Case {
    pub name: String,
    pub machines: Vec<String>,
    /// Slots in use, per machine (held by "other hooks").
    #[serde(default)]
    pub busy: Vec<u32>,
    pub system: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default = "yes")]
    pub am_willing: bool,
    #[serde(default = "one")]
    pub local_max_jobs: u32,
    /// The parent's `experimental-features`, as its settings block carries them (turned on on
    /// the command line, say).
    #[serde(default)]
    pub local_experimental_features: Vec<String>,
    /// `experimental-features` in the hook's own `nix.conf`.
    #[serde(default)]
    pub nix_conf_experimental_features: Vec<String>,
    /// The Nix whose settings block the hook gets (`2.8`, `2.26` or `2.34`): the block is the
    /// one that release really sent, with the case's local settings laid over it.
    #[serde(default = "nix_2_8")]
    pub nix: String,
    /// `try URI…`, `decline` or `postpone`.
    pub expect: String,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn nix_2_8() -> String {
    "2.8".into()
}

pub fn load() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/decisions.toml");
    let table: Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    table.case
}

/// The local machine of a case: x86_64-linux with Nix's default features, the case's
/// max-jobs and experimental features, read from nix.conf and the settings block of the case's
/// Nix as the hook reads them.
pub fn local(case: &Case) -> LocalMachine {
    let host = nwh_nixconf::HostDefaults {
        system: "x86_64-linux".into(),
        extra_platforms: BTreeSet::new(),
        system_features: BTreeSet::new(),
        cpus: 1,
    };
    let mut settings = nwh_nixconf::Settings::new("/nonexistent/etc/nix", None, host);
    let conf = nwh_nixconf::Origin::File { path: "/nonexistent/etc/nix/nix.conf".into(), line: 1 };
    settings.set("experimental-features", &case.nix_conf_experimental_features.join(" "), conf).unwrap();
    let capture = match case.nix.as_str() {
        "2.8" => "spy-accept",
        "2.26" => "nix-2.26.3-spy-accept0",
        "2.34" => "nix-2.34.8-spy-accept0",
        other => panic!("{}: no recorded settings block of Nix {other}", case.name),
    };
    let recorded = super::fake_parent::Capture::read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/captures")
            .join(capture)
            .join("stdin-1.bin"),
    );
    let ours = [
        ("max-jobs", case.local_max_jobs.to_string()),
        ("system", "x86_64-linux".into()),
        ("extra-platforms", "i686-linux".into()),
        ("system-features", "benchmark big-parallel kvm nixos-test".into()),
        ("experimental-features", case.local_experimental_features.join(" ")),
    ];
    let mut block = recorded.settings;
    for (name, value) in ours {
        match block.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => block.push((name.into(), value)),
        }
    }
    nix_wasm_hook::core::settings::apply_block(&mut settings, &block).unwrap();
    nix_wasm_hook::core::settings::local(&settings)
}

/// The case's machines, parsed as the hook parses them.
pub fn machines(case: &Case) -> Vec<nwh_machines::Machine> {
    let ctx = nwh_machines::ParseContext { local_system: "x86_64-linux".into(), cwd: "/".into() };
    let parsed = nwh_machines::parse_builders(&case.machines.join("\n"), "decisions.toml", &ctx);
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{}: {:?}", case.name, parsed.diagnostics);
    parsed.machines
}
