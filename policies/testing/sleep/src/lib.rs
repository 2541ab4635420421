//! Test policy `sleep`: built for **wasm32-wasip2**, it waits inside `decide` in one of the
//! ways WASI offers a program to wait, chosen by the derivation's name, and afterwards answers
//! as the default policy does:
//!
//! * a name holding `poll`: `wasi:io/poll.poll` on a 60 s `subscribe-duration`;
//! * a name holding `forever`: `[method]pollable.block` on `subscribe-instant` of the last
//!   instant the monotonic clock can name, which never comes;
//! * a name holding `stdin`: reads stdin to its end (`std::io::stdin().read_to_end`, which
//!   is `blocking-read`), then subscribes to stdin and blocks until it is readable. With
//!   stdin closed and empty, as the host gives it, both return at once; it then answers as
//!   the default does when it read nothing, and declines (every machine rejected with
//!   "sleep read N bytes from stdin") when it read something;
//! * any other name: `std::thread::sleep` for 60 s.
//!
//! A host whose deadline does not reach into a waiting WASI call is held for a minute (or for
//! ever); one that bounds the wait ends the call at its deadline and the default decides.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

// The default policy's model and Nix's choice, from the crate the host decides with.
use nwh_decision::choice as logic;

#[path = "../../../default/src/convert.rs"]
mod convert;

use std::io::Read;
use std::time::Duration;

const MINUTE_NS: u64 = 60_000_000_000;

/// Bytes read from stdin, through std and then through WASI directly.
fn drain_stdin() -> usize {
    let mut bytes = Vec::new();
    let read = std::io::stdin().read_to_end(&mut bytes).unwrap_or(0);
    let stdin = wasip2::cli::stdin::get_stdin();
    stdin.subscribe().block();
    read
}

struct Sleep;

impl wit::Guest for Sleep {
    fn decide(request: wit::Request, machines: Vec<wit::Machine>) -> wit::Answer {
        let name = request.drv_path.clone();
        if name.contains("poll") {
            let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(MINUTE_NS);
            wasip2::io::poll::poll(&[&pollable]);
        } else if name.contains("forever") {
            wasip2::clocks::monotonic_clock::subscribe_instant(u64::MAX).block();
        } else if name.contains("stdin") {
            let read = drain_stdin();
            if read > 0 {
                return wit::Answer {
                    decision: wit::Decision::Decline,
                    rejected: (0..machines.len())
                        .map(|i| wit::Rejection {
                            machine: u32::try_from(i).unwrap_or(u32::MAX),
                            reason: format!("sleep read {read} bytes from stdin"),
                        })
                        .collect(),
                };
            }
        } else {
            std::thread::sleep(Duration::from_secs(60));
        }
        let (request, machines) = convert::from_wit(request, machines);
        convert::to_wit(logic::decide(&request, &machines))
    }
}

export!(Sleep);
