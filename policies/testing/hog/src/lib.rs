//! Test policy `hog`: `decide` allocates 1 MiB blocks and keeps them all, forever. Only the
//! host's memory limit stops it (a few hundred fuel per MiB): with `trap_on_grow_failure(true)`
//! the trap reads "forcing trap when growing memory to N bytes"; without it the allocator's
//! failure aborts with a bare `unreachable`. Without any limit it fills the 4 GiB of wasm32
//! memory (≈1.3 M fuel) and then aborts the same way.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Hog;

impl wit::Guest for Hog {
    fn decide(_request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            // Reserve 1 MiB without filling it: the allocator grows linear memory
            // (`memory.grow`, which the host's limiter sees) at almost no fuel cost, so the
            // memory limit trips long before any sensible fuel budget runs out.
            let mut block: Vec<u8> = Vec::with_capacity(1 << 20);
            block.push(0xAA);
            held.push(core::hint::black_box(block));
        }
    }
}

export!(Hog);
