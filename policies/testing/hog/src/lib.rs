//! Test policy `hog`: `decide` allocates 1 MiB blocks, touches each and keeps them all,
//! forever. Only the host's memory limit stops it: with `trap_on_grow_failure(true)` the trap
//! reads "forcing trap when growing memory to N bytes"; without it the allocator's failure
//! aborts with a bare `unreachable`. (Out of fuel first only if the fuel budget is tiny.)
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-world", path: "../../../wit" });

use exports::nix_wasm_hook::policy::policy as wit;

struct Hog;

impl wit::Guest for Hog {
    fn decide(_request: wit::Request, _machines: Vec<wit::Machine>) -> wit::Answer {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            // Write to every 4 KiB page so nothing can be skipped as untouched.
            for page in block.chunks_mut(4096) {
                page[0] = 0xAA;
            }
            held.push(core::hint::black_box(block));
        }
    }
}

export!(Hog);
