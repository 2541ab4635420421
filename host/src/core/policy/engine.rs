//! One wasmtime engine per process, configured for bounded, deterministic policy calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A call's wall-clock deadline is a number of these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine. Fuel makes the CPU budget deterministic (replay must decide as the live
/// hook did); epochs are the wall-clock backstop for anything fuel does not count.
pub fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(1 << 20);
    if POOLED.load(Ordering::Relaxed) {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool()));
    }
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// Whether this process's engine keeps instance slots between decisions ([`pool_instances`]).
static POOLED: AtomicBool = AtomicBool::new(false);

/// Makes this process's engine pool its instances: for the tools that decide thousands of
/// times in one process (`simulate`, `replay`). Call before the first policy is loaded. The
/// hook decides once or a few times per process, where the pool's reservation (128 slots of
/// address space) and its resident pages would cost more than they save.
pub fn pool_instances() {
    POOLED.store(true, Ordering::Relaxed);
}

/// Every decision runs in a fresh instance. wasmtime's default allocator maps new linear
/// memory for each instance and unmaps it afterwards, and each page the call touches is a page
/// fault: at a thousand machines (~80 pages) that was a quarter of a decision, spent in the
/// kernel. The pooling allocator keeps memory slots between instances and hands a slot back
/// reset to the policy's initial image, the written pages zeroed in place (only those: Linux
/// ≥ 6.7 names them, PAGEMAP_SCAN), so a fresh instance costs no mapping and no fault. Nothing
/// of one decision is visible to the next.
fn pool() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    // A process decides one request at a time; the tests run a few at once. Python and
    // JavaScript components have a dozen core instances, several tables, big ones. Each
    // memory slot reserves 4 GiB of address space (and a guard), as any instance's memory does.
    pool.total_component_instances(128)
        .total_core_instances(1024)
        .total_memories(128)
        .total_tables(512)
        .max_memories_per_module(2)
        .max_tables_per_module(8)
        // The limit `MemoryLimiter::table_growing` enforces anyway.
        .table_elements(100_000)
        // Stacks are for async calls, which the policy host never makes; wasmtime's default of
        // a thousand, each behind a guard page, took 4 ms to set up.
        .total_stacks(1)
        // Enough for the default policy over a thousand machines; a bigger memory is reset
        // beyond this by the kernel (unmapped and mapped again).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    pool
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
