//! Test policy `facts`: shows what of contract 0.3's facts reached it. It declines, and its
//! reason for each machine is `local: <the local machine>; machine: <its facts>`, both as the
//! decision model's `Debug` prints them, so that the host's test compares them with its own
//! values, field by field, absences and ages included.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;
use nwh_decision::facts::{self, Facts, LocalView};

struct FactsEcho;

impl wit::Guest for FactsEcho {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let local = LocalView {
            max_jobs: request.local.max_jobs,
            speed_factor: request.local.speed_factor,
            facts: from_wit(request.local.facts),
        };
        let rejected = machines
            .into_iter()
            .enumerate()
            .map(|(i, m)| wit::Rejection {
                machine: i as u32,
                reason: format!("local: {local:?}; machine: {:?}", from_wit(m.facts)),
            })
            .collect();
        wit::Answer { decision: wit::Decision::Decline, rejected }
    }
}

fn from_wit(f: wit::Facts) -> Facts {
    Facts {
        load: f.load.map(|l| facts::Load {
            avg1: l.avg1,
            avg5: l.avg5,
            avg15: l.avg15,
            cores: l.cores,
            age_ms: l.age_ms,
        }),
        pressure: f.pressure.map(|p| facts::Pressure {
            cpu: p.cpu,
            memory: p.memory,
            io: p.io,
            age_ms: p.age_ms,
        }),
        free_store_bytes: f.free_store_bytes.map(|a| facts::Amount { bytes: a.bytes, age_ms: a.age_ms }),
        builds_running: f.builds_running.map(|c| facts::Count { value: c.value, age_ms: c.age_ms }),
        recent_failures: f.recent_failures.map(|c| facts::Count { value: c.value, age_ms: c.age_ms }),
        missing_input_bytes: f
            .missing_input_bytes
            .map(|a| facts::Amount { bytes: a.bytes, age_ms: a.age_ms }),
        transfer_rate: f.transfer_rate.map(|r| facts::Rate {
            value: r.value,
            samples: r.samples,
            age_ms: r.age_ms,
        }),
        relative_speed: f.relative_speed.map(|r| facts::Rate {
            value: r.value,
            samples: r.samples,
            age_ms: r.age_ms,
        }),
        past_builds: f.past_builds.map(|h| facts::History {
            builds: h.builds,
            mean_ms: h.mean_ms,
            last_ms: h.last_ms,
            age_ms: h.age_ms,
        }),
    }
}

export!(FactsEcho);
