//! The arguments and the answer of `decide`, as wasmtime lowers and lifts them, through its
//! public derives only (so that a wasmtime release is an upgrade, not a port).
//!
//! The bindgen types own their strings: passing the host's `MachineView`s through them would
//! copy every string and list of every machine on every call, and free them after. These
//! records borrow from the host's `Request` and `MachineView`s instead, so a call copies each
//! string once, into the guest.
//!
//! wasmtime checks these types against the component's, by name and shape, when `decide` is
//! looked up; the bindgen modules check the whole component against its contract version when
//! it is loaded.

use wasmtime::component::{ComponentType, Lift, Lower};

use nwh_decision::facts::{self, Facts};
use nwh_decision::{self as decision, Decision, LocalView, MachineView, Request};

/// WIT `request` of contracts 0.1 and 0.2.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RequestArg<'a> {
    #[component(name = "drv-path")]
    drv_path: &'a str,
    system: &'a str,
    #[component(name = "required-features")]
    required_features: &'a [String],
    #[component(name = "am-willing")]
    am_willing: bool,
    #[component(name = "could-build-locally")]
    could_build_locally: bool,
}

impl<'a> From<&'a Request> for RequestArg<'a> {
    fn from(r: &'a Request) -> Self {
        RequestArg {
            drv_path: &r.drv_path,
            system: &r.system,
            required_features: &r.required_features,
            am_willing: r.am_willing,
            could_build_locally: r.could_build_locally,
        }
    }
}

/// WIT `request` of contract 0.3 (`local` added).
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RequestV0_3<'a> {
    #[component(name = "drv-path")]
    drv_path: &'a str,
    system: &'a str,
    #[component(name = "required-features")]
    required_features: &'a [String],
    #[component(name = "am-willing")]
    am_willing: bool,
    #[component(name = "could-build-locally")]
    could_build_locally: bool,
    local: LocalArg,
}

impl<'a> From<&'a Request> for RequestV0_3<'a> {
    fn from(r: &'a Request) -> Self {
        RequestV0_3 {
            drv_path: &r.drv_path,
            system: &r.system,
            required_features: &r.required_features,
            am_willing: r.am_willing,
            could_build_locally: r.could_build_locally,
            local: LocalArg::from(&r.local),
        }
    }
}

/// WIT `local-machine`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct LocalArg {
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    facts: FactsArg,
}

impl From<&LocalView> for LocalArg {
    fn from(l: &LocalView) -> Self {
        LocalArg { max_jobs: l.max_jobs, speed_factor: l.speed_factor, facts: FactsArg::from(&l.facts) }
    }
}

/// WIT `facts`: small records of numbers, copied.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct FactsArg {
    load: Option<LoadArg>,
    pressure: Option<PressureArg>,
    #[component(name = "free-store-bytes")]
    free_store_bytes: Option<AmountArg>,
    #[component(name = "builds-running")]
    builds_running: Option<CountArg>,
    #[component(name = "recent-failures")]
    recent_failures: Option<CountArg>,
    #[component(name = "missing-input-bytes")]
    missing_input_bytes: Option<AmountArg>,
    #[component(name = "transfer-rate")]
    transfer_rate: Option<RateArg>,
    #[component(name = "relative-speed")]
    relative_speed: Option<RateArg>,
    #[component(name = "past-builds")]
    past_builds: Option<HistoryArg>,
}

impl From<&Facts> for FactsArg {
    fn from(f: &Facts) -> Self {
        FactsArg {
            load: f.load.map(|l| LoadArg {
                avg1: l.avg1,
                avg5: l.avg5,
                avg15: l.avg15,
                cores: l.cores,
                age_ms: l.age_ms,
            }),
            pressure: f.pressure.map(|p| PressureArg {
                cpu: p.cpu,
                memory: p.memory,
                io: p.io,
                age_ms: p.age_ms,
            }),
            free_store_bytes: f.free_store_bytes.map(AmountArg::from),
            builds_running: f.builds_running.map(CountArg::from),
            recent_failures: f.recent_failures.map(CountArg::from),
            missing_input_bytes: f.missing_input_bytes.map(AmountArg::from),
            transfer_rate: f.transfer_rate.map(RateArg::from),
            relative_speed: f.relative_speed.map(RateArg::from),
            past_builds: f.past_builds.map(|h| HistoryArg {
                builds: h.builds,
                mean_ms: h.mean_ms,
                last_ms: h.last_ms,
                age_ms: h.age_ms,
            }),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct LoadArg {
    avg1: f64,
    avg5: f64,
    avg15: f64,
    cores: u32,
    #[component(name = "age-ms")]
    age_ms: u64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct PressureArg {
    cpu: f64,
    memory: f64,
    io: f64,
    #[component(name = "age-ms")]
    age_ms: u64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct AmountArg {
    bytes: u64,
    #[component(name = "age-ms")]
    age_ms: u64,
}

impl From<facts::Amount> for AmountArg {
    fn from(a: facts::Amount) -> Self {
        AmountArg { bytes: a.bytes, age_ms: a.age_ms }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct CountArg {
    value: u32,
    #[component(name = "age-ms")]
    age_ms: u64,
}

impl From<facts::Count> for CountArg {
    fn from(c: facts::Count) -> Self {
        CountArg { value: c.value, age_ms: c.age_ms }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RateArg {
    value: f64,
    samples: u32,
    #[component(name = "age-ms")]
    age_ms: u64,
}

impl From<facts::Rate> for RateArg {
    fn from(r: facts::Rate) -> Self {
        RateArg { value: r.value, samples: r.samples, age_ms: r.age_ms }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct HistoryArg {
    builds: u32,
    #[component(name = "mean-ms")]
    mean_ms: u64,
    #[component(name = "last-ms")]
    last_ms: u64,
    #[component(name = "age-ms")]
    age_ms: u64,
}

/// WIT `machine` of contract 0.3 (`facts` added), borrowed from the host's view.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct MachineV0_3<'a> {
    uri: &'a str,
    systems: &'a [String],
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    #[component(name = "supported-features")]
    supported_features: &'a [String],
    #[component(name = "mandatory-features")]
    mandatory_features: &'a [String],
    #[component(name = "slots-in-use")]
    slots_in_use: u32,
    enabled: bool,
    #[component(name = "down-reason")]
    down_reason: Option<&'a str>,
    facts: FactsArg,
}

impl<'a> From<&'a MachineView> for MachineV0_3<'a> {
    fn from(m: &'a MachineView) -> Self {
        MachineV0_3 {
            uri: &m.uri,
            systems: &m.systems,
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: &m.supported_features,
            mandatory_features: &m.mandatory_features,
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
            down_reason: m.down_reason.as_deref(),
            facts: FactsArg::from(&m.facts),
        }
    }
}

/// WIT `machine` of contract 0.2 (`down-reason` added), borrowed from the host's view.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct MachineV0_2<'a> {
    uri: &'a str,
    systems: &'a [String],
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    #[component(name = "supported-features")]
    supported_features: &'a [String],
    #[component(name = "mandatory-features")]
    mandatory_features: &'a [String],
    #[component(name = "slots-in-use")]
    slots_in_use: u32,
    enabled: bool,
    #[component(name = "down-reason")]
    down_reason: Option<&'a str>,
}

impl<'a> From<&'a MachineView> for MachineV0_2<'a> {
    fn from(m: &'a MachineView) -> Self {
        MachineV0_2 {
            uri: &m.uri,
            systems: &m.systems,
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: &m.supported_features,
            mandatory_features: &m.mandatory_features,
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
            down_reason: m.down_reason.as_deref(),
        }
    }
}

/// WIT `machine` of contract 0.1, borrowed from the host's view.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct MachineV0_1<'a> {
    uri: &'a str,
    systems: &'a [String],
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    #[component(name = "supported-features")]
    supported_features: &'a [String],
    #[component(name = "mandatory-features")]
    mandatory_features: &'a [String],
    #[component(name = "slots-in-use")]
    slots_in_use: u32,
    enabled: bool,
}

impl<'a> From<&'a MachineView> for MachineV0_1<'a> {
    fn from(m: &'a MachineView) -> Self {
        MachineV0_1 {
            uri: &m.uri,
            systems: &m.systems,
            max_jobs: m.max_jobs,
            speed_factor: m.speed_factor,
            supported_features: &m.supported_features,
            mandatory_features: &m.mandatory_features,
            slots_in_use: m.slots_in_use,
            enabled: m.enabled,
        }
    }
}

/// WIT `decision`.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub enum DecisionOut {
    #[component(name = "try")]
    Try(Vec<u32>),
    #[component(name = "decline")]
    Decline,
    #[component(name = "postpone")]
    Postpone,
}

/// WIT `rejection`.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct RejectionOut {
    machine: u32,
    reason: String,
}

/// WIT `answer` (the same in every contract version).
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct AnswerOut {
    decision: DecisionOut,
    rejected: Vec<RejectionOut>,
}

impl From<AnswerOut> for decision::Answer {
    fn from(a: AnswerOut) -> Self {
        let decision = match a.decision {
            DecisionOut::Try(list) => Decision::Try(list),
            DecisionOut::Decline => Decision::Decline,
            DecisionOut::Postpone => Decision::Postpone,
        };
        decision::Answer {
            decision,
            rejected: a.rejected.into_iter().map(|r| (r.machine, r.reason)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::policy::{cache::Cache, native, Policy};
    use nwh_decision::{MachineView, Request};

    fn machine(i: usize) -> MachineView {
        let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        MachineView {
            uri: format!("ssh://büilder-{i}.example.org"),
            systems: match i % 4 {
                0 => strings(&["x86_64-linux"]),
                1 => strings(&["x86_64-linux", "aarch64-linux"]),
                2 => strings(&["aarch64-linux"]),
                _ => Vec::new(),
            },
            max_jobs: (i % 5) as u32,
            speed_factor: [1.0, 2.5, 0.5, 4.0][i % 4],
            supported_features: if i.is_multiple_of(3) {
                strings(&["kvm", "big-parallel"])
            } else {
                Vec::new()
            },
            mandatory_features: if i.is_multiple_of(7) { strings(&["benchmark"]) } else { Vec::new() },
            slots_in_use: (i % 3) as u32,
            enabled: i % 6 != 5,
            down_reason: (i % 6 == 5).then(|| format!("ssh: connect to host {i}: Connection refused")),
            facts: Default::default(),
        }
    }

    /// Every field of every machine reaches the policy as the host holds it: the default policy
    /// in Wasm answers as its own rules run natively on the host's values. It names systems,
    /// features and down reasons in its rejections, and ranks by slots and speed, so its
    /// answers show any field lowered wrong.
    #[test]
    fn machines_reach_the_policy_whole() {
        let policy = Policy::default_policy(&Cache::disabled()).unwrap();
        let machines: Vec<MachineView> = (0..200).map(machine).collect();
        for (system, features) in
            [("x86_64-linux", vec![]), ("aarch64-linux", vec!["kvm".to_string()]), ("builtin", vec![])]
        {
            let request = Request {
                drv_path: "/nix/store/00000000000000000000000000000000-hello.drv".into(),
                system: system.into(),
                required_features: features,
                am_willing: false,
                could_build_locally: false,
                local: Default::default(),
            };
            let answer = policy.call(&request, &machines).unwrap().answer;
            assert_eq!(answer, native::decide(&request, &machines), "on {system}");
            assert!(!answer.rejected.is_empty(), "the machines exercise rejections");
        }
    }
}
