//! One wasmtime engine per process, configured for bounded, deterministic policy calls.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use wasmtime::{Config, Engine};

/// How often the epoch advances. A call's wall-clock deadline is a number of these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine. Fuel makes the CPU budget deterministic (replay must decide as the live
/// hook did); epochs are the wall-clock backstop for anything fuel does not count.
pub fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(1 << 20);
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// The engine shared by every policy in this process (default and user policy alike), so the
/// precompiled cache key and the ticker thread exist once.
pub fn shared() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = new_engine()?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// Advances the epoch until the engine is dropped. Holding only a weak reference lets the
/// thread end with the engine instead of keeping it alive.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("policy-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .expect("spawning the epoch ticker thread");
}
