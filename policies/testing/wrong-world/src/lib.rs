//! Test policy `wrong-world`: a component of another world (`example:other/thing@0.1.0`),
//! given to the hook as a policy by mistake. The host must refuse it, naming what it exports
//! and what a policy must export.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "other", path: "wit" });

struct Wrong;

impl exports::example::other::thing::Guest for Wrong {
    fn run() -> u32 {
        42
    }
}

export!(Wrong);
