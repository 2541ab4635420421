//! What a policy may import, and the empty world it runs in.
//!
//! A policy gets data, never capabilities. Components from Python or JS toolchains import WASI
//! even when they do no I/O; they get a WASI with nothing in it (no files, sockets or
//! environment, a fixed clock, seeded randomness, a closed stdin), so that a replay decides
//! exactly as the live hook did, and nothing in it to wait for: what waits anyway ends at the
//! call's deadline ([`super::waits`]). Any other import is refused when the policy is loaded.

use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::waits::{self, Deadline};
use super::LoadError;

/// WASI packages a policy may import; all of them are backed by nothing.
const WASI_PACKAGES: &[&str] = &["cli", "io", "clocks", "random", "filesystem", "sockets"];

/// What a component asks for, sorted out at load time.
pub struct Imports {
    pub wasi: bool,
}

/// Refuses any import that is neither our own package nor an allowed WASI 0.2 package,
/// naming it.
pub fn check_imports(engine: &Engine, component: &Component) -> Result<Imports, LoadError> {
    let mut wasi = false;
    let mut refused = Vec::new();
    for (name, _item) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix("wasi:") {
            let package = rest.split('/').next().unwrap_or_default();
            // wasmtime-wasi provides WASI 0.2.x; a 0.2 guest of any patch level links.
            let version_ok = rest.rsplit_once('@').is_some_and(|(_, v)| v.starts_with("0.2."));
            if WASI_PACKAGES.contains(&package) && version_ok {
                wasi = true;
                continue;
            }
        } else if name.starts_with(&format!("{}/", bindings::PACKAGE)) {
            continue;
        }
        refused.push(name.to_string());
    }
    if !refused.is_empty() {
        return Err(LoadError::ForbiddenImports(refused));
    }
    Ok(Imports { wasi })
}

/// Finds the policy interface among the exports and returns the `major.minor` of the
/// contract it was built for, if the host speaks it, and the interface's full export name.
pub fn check_exports(engine: &Engine, component: &Component) -> Result<(&'static str, String), LoadError> {
    let wanted = format!("{}/{}", bindings::PACKAGE, bindings::INTERFACE);
    let mut exports = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        if let Some(version) = name.strip_prefix(&wanted).and_then(|v| v.strip_prefix('@')) {
            let ComponentItem::ComponentInstance(instance) = &item.ty else {
                return Err(LoadError::WrongExport(format!("`{name}` is not an interface instance")));
            };
            if !matches!(
                instance.get_export(engine, "decide").map(|e| e.ty),
                Some(ComponentItem::ComponentFunc(_))
            ) {
                let found: Vec<String> = instance.exports(engine).map(|(n, _)| format!("`{n}`")).collect();
                return Err(LoadError::MissingDecide { interface: name.to_string(), found });
            }
            let minor = version.rsplit_once('.').map_or(version, |(mm, _patch)| mm);
            return bindings::SUPPORTED
                .iter()
                .find(|s| **s == minor)
                .map(|s| (*s, name.to_string()))
                .ok_or_else(|| LoadError::Version { policy: version.to_string() });
        }
        exports.push(name.to_string());
    }
    Err(LoadError::MissingExport { found: exports })
}

/// A linker that provides exactly what `imports` needs: nothing, or an empty WASI.
pub fn linker(engine: &Engine, imports: &Imports) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    if imports.wasi {
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        waits::bound_waits(&mut linker)?;
    }
    Ok(linker)
}

/// Per-call store data: the memory limiter, the deadline and, for WASI guests, their empty
/// context.
pub struct StoreState {
    pub limiter: MemoryLimiter,
    pub deadline: Deadline,
    wasi: WasiCtx,
    table: ResourceTable,
    pub logs: MemoryOutputPipe,
}

/// Bytes of guest stdout/stderr kept per call; more is dropped, as a log is a hint, not data.
const LOG_CAPACITY: usize = 4096;

impl StoreState {
    pub fn new(memory_limit: usize, deadline: Duration) -> Self {
        let logs = MemoryOutputPipe::new(LOG_CAPACITY);
        let mut b = WasiCtx::builder();
        // Closed, not merely empty: a read returns end-of-file at once and never waits (it is
        // wasmtime-wasi's default too, spelled out so that it stays so).
        b.stdin(ClosedInputStream)
            .stdout(logs.clone())
            .stderr(logs.clone())
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5e, 0xed, 0x00, 0x01]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x5e, 0xed, 0x00, 0x02]))
            .insecure_random_seed(0)
            // No socket at all, not merely nowhere to connect to: a policy gets data only.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        StoreState {
            limiter: MemoryLimiter::new(memory_limit),
            deadline: Deadline::new(deadline),
            wasi: b.build(),
            table: ResourceTable::new(),
            logs,
        }
    }

    /// What a waiting WASI function needs: the resources it waits on, and the time left.
    pub(super) fn waiting(&mut self) -> (&mut ResourceTable, &mut Deadline) {
        (&mut self.table, &mut self.deadline)
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The clock a policy sees: always 2000-01-01T00:00:00Z, so a decision never depends on when
/// it was made (replay depends on that).
struct FixedClock;

const FIXED_EPOCH_SECS: u64 = 946_684_800;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_EPOCH_SECS)
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Bounds linear memory and remembers the peak and whether the bound was hit, so that the
/// failure can say "memory limit" instead of a bare trap.
pub struct MemoryLimiter {
    limit: usize,
    pub peak: usize,
    pub exceeded: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        MemoryLimiter { limit, peak: 0, exceeded: false }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            // Trapping (rather than returning false) stops a guest that would otherwise retry
            // or abort with an unhelpful `unreachable`.
            return Err(wasmtime::format_err!(
                "policy memory limit of {} bytes exceeded (wanted {desired})",
                self.limit
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
