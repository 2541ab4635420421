//! The Wasm policy host: loads components, runs one bounded call per request, and falls back
//! to the embedded default policy when a policy fails or answers nonsense.

mod bindings;
pub mod cache;
pub mod engine;
mod native;
mod params;
mod sandbox;
mod waits;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre};
use wasmtime::{Engine, Store, Trap};

use bindings::{v0_1, v0_2, v0_3};
use cache::Cache;
use nwh_decision::{self as decision, Answer, DecidedBy, Decision, MachineView, Request};
use nwh_options::Options;
use params::{AnswerOut, MachineV0_1, MachineV0_2, MachineV0_3, RequestArg, RequestV0_3};
use sandbox::StoreState;

/// The default policy, built from `policies/default` and committed (CI rebuilds it and fails
/// on a difference), so that the binary needs no file beside it.
pub static DEFAULT_POLICY: &[u8] = include_bytes!("../../../../policies/default/default.wasm");

/// Budgets for one call. Fuel is the policy's budget (deterministic: replay gives the same
/// verdict); the deadline is a wall-clock backstop; memory bounds linear memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub fuel: u64,
    pub deadline: Duration,
    pub memory: usize,
}

/// The options' values, or their defaults. A Rust policy spends ~60 k fuel per decision,
/// Python ~600 k and JS ~4 M on 16 machines; the default 50 M leaves room without letting a
/// loop stall Nix.
impl From<&Options> for Limits {
    fn from(opts: &Options) -> Limits {
        let d = Limits::default();
        Limits {
            fuel: opts.policy_fuel.unwrap_or(d.fuel),
            deadline: opts.policy_timeout_ms.map(Duration::from_millis).unwrap_or(d.deadline),
            memory: opts.policy_memory_mib.map(|m| (m as usize) << 20).unwrap_or(d.memory),
        }
    }
}

impl Limits {
    /// The limits the embedded default policy runs with on this input: never below these, and
    /// growing with the size of the input, so that a long machine list or feature list is not
    /// what stops it (its cost grows with its input: a pass over the machines, a sort). Only a
    /// bug, or an input far past the stated bounds, could stop it; its rules then run natively.
    pub fn scaled_to(self, req: &Request, machines: &[MachineView]) -> Limits {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 8).sum::<usize>();
        let machines_bytes: usize = machines
            .iter()
            .map(|m| {
                64 + m.uri.len()
                    + strings(&m.systems)
                    + strings(&m.supported_features)
                    + strings(&m.mandatory_features)
                    + m.down_reason.as_ref().map_or(0, String::len)
            })
            .sum();
        let input =
            (req.drv_path.len() + req.system.len() + strings(&req.required_features) + machines_bytes) as u64;
        let features = (req.required_features.len() + 1) as u64;
        Limits {
            // Each machine's features are compared with the request's.
            fuel: self.fuel.max(DEFAULT_FUEL_PER_BYTE * input * features),
            deadline: self.deadline,
            memory: self.memory.max(DEFAULT_MEMORY_BASE + DEFAULT_MEMORY_PER_BYTE * input as usize),
        }
    }
}

/// The embedded default's budget per byte of its input, with room to spare: it spent ~19 fuel
/// per byte on ten thousand machines of sixteen features each (policy_limits.rs), and its
/// memory holds the input once, lowered, and its answer.
const DEFAULT_FUEL_PER_BYTE: u64 = 400;
const DEFAULT_MEMORY_PER_BYTE: usize = 64;
/// Its own image and stack, whatever the input.
const DEFAULT_MEMORY_BASE: usize = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: nwh_options::DEFAULT_POLICY_FUEL,
            deadline: Duration::from_millis(nwh_options::DEFAULT_POLICY_TIMEOUT_MS),
            memory: (nwh_options::DEFAULT_POLICY_MEMORY_MIB as usize) << 20,
        }
    }
}

/// Why a component cannot be used as a policy at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "it imports {}, which the hook does not provide: a policy gets no capabilities, only an empty \
         WASI 0.2 (cli, io, clocks, random, filesystem, sockets) for toolchains that need one",
        .0.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImports(Vec<String>),
    #[error(
        "it does not export the interface `{}/{}` (world `policy-world` of wit/policy.wit, version {}){}",
        bindings::PACKAGE,
        bindings::INTERFACE,
        bindings::VERSION,
        found_list(.found)
    )]
    MissingExport { found: Vec<String> },
    #[error(
        "its `{interface}` has no function `decide`, which every policy must export as \
         `decide: func(request: request, machines: list<machine>) -> answer`; it has {}",
        if .found.is_empty() { "no functions".to_string() } else { .found.join(", ") }
    )]
    MissingDecide { interface: String, found: Vec<String> },
    #[error("its export is not usable: {0}")]
    WrongExport(String),
    #[error(
        "it was built for version {policy} of `{}`, and this hook speaks {}: rebuild it against this \
         hook's wit/policy.wit, or use a hook that speaks {policy}",
        bindings::PACKAGE,
        supported_versions()
    )]
    Version { policy: String },
    #[error("it is not a valid Wasm component: {0}")]
    Invalid(String),
}

/// `0.3.x, 0.2.x and 0.1.x`.
fn supported_versions() -> String {
    let versions: Vec<String> = bindings::SUPPORTED.iter().map(|v| format!("{v}.x")).collect();
    match versions.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "; it exports nothing".into()
    } else {
        format!("; it exports {}", found.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
    }
}

/// Why one call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("it ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    #[error("it ran longer than its {0:?} deadline")]
    Deadline(Duration),
    /// Waiting is the one thing the epoch deadline cannot interrupt, so it is bounded apart
    /// and named apart: the author learns which call it was.
    #[error(
        "it was still waiting in WASI's `{call}` (a sleep, a poll or a blocking read) when its \
         {deadline:?} deadline came"
    )]
    Waited { call: &'static str, deadline: Duration },
    #[error("it exceeded its memory limit of {0} bytes")]
    Memory(usize),
    #[error("it trapped: {0}")]
    Trap(String),
    #[error("its answer is not usable: {0}")]
    Nonsense(String),
}

/// A policy ready to decide: compiled, checked and linked once per process.
pub struct Policy {
    name: String,
    sha256: String,
    version: &'static str,
    pre: InstancePre<StoreState>,
    /// `decide` in the policy interface, found once instead of by name on every call.
    decide: ComponentExportIndex,
    engine: Engine,
    pub limits: Limits,
}

/// A policy's answer and what it cost.
#[derive(Debug)]
pub struct Call {
    pub answer: Answer,
    pub fuel_used: u64,
    pub peak_memory: usize,
    pub logs: String,
}

impl Policy {
    /// Loads the embedded default policy.
    pub fn default_policy(cache: &Cache) -> Result<Policy> {
        Policy::from_bytes("the default policy", DEFAULT_POLICY, cache)
            .context("loading the embedded default policy")
    }

    pub fn from_file(path: &Path, cache: &Cache) -> Result<Policy> {
        let bytes = nwh_files::read(path, nwh_files::POLICY)
            .with_context(|| format!("reading policy {}", path.display()))?;
        Policy::from_bytes(&path.display().to_string(), &bytes, cache)
            .with_context(|| format!("policy {} cannot be used", path.display()))
    }

    pub fn from_bytes(name: &str, bytes: &[u8], cache: &Cache) -> Result<Policy> {
        let engine = engine::shared()?.clone();
        let sha256 = cache::sha256_hex(bytes);
        let component: Component = match cache.load(&engine, bytes, &sha256) {
            Ok((c, _)) => c,
            Err(e) => return Err(LoadError::Invalid(format!("{e:#}")).into()),
        };
        let (version, interface) = sandbox::check_exports(&engine, &component)?;
        let imports = sandbox::check_imports(&engine, &component)?;
        let linker = sandbox::linker(&engine, &imports)?;
        let unusable = |e: wasmtime::Error| LoadError::WrongExport(first_line(&format!("{e:#}")));
        let pre = linker.instantiate_pre(&component).map_err(unusable)?;
        // The generated bindings check the component's whole world against its contract
        // version. The calls go through `params`, whose types wasmtime checks again when
        // `decide` is looked up.
        match version {
            "0.1" => {
                v0_1::PolicyWorldPre::new(pre.clone()).map_err(unusable)?;
            }
            "0.2" => {
                v0_2::PolicyWorldPre::new(pre.clone()).map_err(unusable)?;
            }
            _ => {
                v0_3::PolicyWorldPre::new(pre.clone()).map_err(unusable)?;
            }
        }
        let decide = component
            .get_export_index(None, interface.as_str())
            .and_then(|i| component.get_export_index(Some(&i), "decide"))
            .ok_or_else(|| LoadError::WrongExport(format!("`{interface}` has no `decide`")))?;
        Ok(Policy { name: name.to_string(), sha256, version, pre, decide, engine, limits: Limits::default() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `major.minor` of the contract the policy was built for.
    pub fn contract_version(&self) -> &'static str {
        self.version
    }

    /// Its contract hands it facts (0.3 and later): worth measuring them for it.
    pub fn sees_facts(&self) -> bool {
        !matches!(self.version, "0.1" | "0.2")
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// How traces name it.
    pub fn id(&self) -> nwh_trace::PolicyId {
        nwh_trace::PolicyId { name: self.name.clone(), sha256: self.sha256.clone() }
    }

    /// One call on a fresh instance: requests stay independent, and after a trap there is
    /// nothing to clean up.
    pub fn call(&self, req: &Request, machines: &[MachineView]) -> Result<Call, CallError> {
        self.call_within(req, machines, self.limits)
    }

    /// [`Policy::call`] with other limits.
    pub fn call_within(
        &self,
        req: &Request,
        machines: &[MachineView],
        limits: Limits,
    ) -> Result<Call, CallError> {
        let mut store = Store::new(&self.engine, StoreState::new(limits.memory, limits.deadline));
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled on the engine");
        let ticks = (limits.deadline.as_millis() / engine::EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let result = self.pre.instantiate(&mut store).and_then(|instance| {
            let answer = match self.version {
                "0.1" => self.call_decide::<RequestArg, MachineV0_1>(&mut store, &instance, req, machines)?,
                "0.2" => self.call_decide::<RequestArg, MachineV0_2>(&mut store, &instance, req, machines)?,
                _ => self.call_decide::<RequestV0_3, MachineV0_3>(&mut store, &instance, req, machines)?,
            };
            Ok(Answer::from(answer))
        });
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let state = store.data();
        let logs = String::from_utf8_lossy(&state.logs.contents()).into_owned();
        match result {
            Ok(answer) => Ok(Call { answer, fuel_used, peak_memory: state.limiter.peak, logs }),
            Err(e) => Err(classify(e, state, limits)),
        }
    }

    /// `decide`, its machines passed as the `machine` record `M` of the policy's contract.
    /// `decide` with the request and machines as contract version `R`/`M` has them.
    fn call_decide<'m, R, M>(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
        req: &'m Request,
        machines: &'m [MachineView],
    ) -> wasmtime::Result<AnswerOut>
    where
        R: From<&'m Request> + wasmtime::component::Lower,
        M: From<&'m MachineView> + wasmtime::component::Lower,
    {
        let machines: Vec<M> = machines.iter().map(M::from).collect();
        let decide = instance.get_typed_func::<(R, &[M]), (AnswerOut,)>(&mut *store, &self.decide)?;
        let (answer,) = decide.call(store, (R::from(req), &machines))?;
        Ok(answer)
    }
}

fn classify(e: wasmtime::Error, state: &StoreState, limits: Limits) -> CallError {
    if state.limiter.exceeded {
        return CallError::Memory(limits.memory);
    }
    if let Some(call) = state.deadline.missed_in {
        return CallError::Waited { call, deadline: limits.deadline };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => CallError::Deadline(limits.deadline),
        // The trap's own words ("wasm `unreachable` instruction executed"); wasmtime's
        // outermost message is only "error while executing at wasm backtrace:".
        Some(t) => {
            let words = t.to_string();
            CallError::Trap(words.strip_prefix("wasm trap: ").unwrap_or(&words).to_string())
        }
        None => CallError::Trap(first_line(&e.root_cause().to_string())),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The longest reason a policy may give for not choosing a machine: a sentence, not a file.
pub const MAX_REASON: usize = 4096;

/// Checks that an answer names only machines that exist and fit now, and gives a reason for
/// every machine it leaves out (so users can be told why), each reason a sentence. An answer
/// can be no larger than the policy's memory, which bounds what a hostile one costs the host.
pub fn validate(answer: &Answer, req: &Request, machines: &[MachineView]) -> Result<(), CallError> {
    if answer.rejected.len() > machines.len() {
        return Err(CallError::Nonsense(format!(
            "it gave {} reasons for {} machines",
            answer.rejected.len(),
            machines.len()
        )));
    }
    if let Some((i, why)) = answer.rejected.iter().find(|(_, why)| why.len() > MAX_REASON) {
        return Err(CallError::Nonsense(format!(
            "its reason for machine #{i} is {} bytes long; a reason is at most {MAX_REASON}",
            why.len()
        )));
    }
    if let Decision::Try(ranking) = &answer.decision {
        if ranking.is_empty() {
            return Err(CallError::Nonsense(
                "it ranked no machine; an empty ranking must be `decline` or `postpone`".into(),
            ));
        }
        // A mark per machine: looking each one up in the ranking before it would cost n²
        // for n machines (half a million comparisons at a thousand).
        let mut ranked = vec![false; machines.len()];
        for &i in ranking {
            let Some(m) = machines.get(i as usize) else {
                return Err(CallError::Nonsense(format!(
                    "it ranked machine #{i}, but there are only {} machines",
                    machines.len()
                )));
            };
            if std::mem::replace(&mut ranked[i as usize], true) {
                return Err(CallError::Nonsense(format!("it ranked machine #{i} ({}) twice", m.uri)));
            }
            if let Err(why) = decision::fits_now(req, m) {
                return Err(CallError::Nonsense(format!(
                    "it ranked {} (#{i}), which does not fit: {why}",
                    m.uri
                )));
            }
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct Decided {
    pub answer: Answer,
    pub by: DecidedBy,
    pub fuel_used: u64,
    /// Wall-clock time of the whole decision (both calls when the default stood in), for traces.
    pub micros: u64,
    /// Set when the chosen policy failed and the default decided instead, or the default failed
    /// too and its rules ran natively: the one warning.
    pub warning: Option<String>,
}

/// The user's policy (if any) with the default behind it.
pub struct Policies {
    pub chosen: Option<Policy>,
    pub default: Policy,
}

impl Policies {
    /// [`Policies::load`] with the limits and the compile cache the options give.
    pub fn configured(path: Option<&PathBuf>, opts: &Options) -> Result<(Policies, Option<String>)> {
        Policies::load(path, Limits::from(opts), &Cache::from(opts))
    }

    /// Loads the default and, when given, the user's policy. A user policy that cannot be
    /// loaded is not fatal: the returned warning says why and the default decides.
    pub fn load(path: Option<&PathBuf>, limits: Limits, cache: &Cache) -> Result<(Policies, Option<String>)> {
        let mut default = Policy::default_policy(cache)?;
        default.limits = limits;
        let (chosen, warning) = match path {
            None => (None, None),
            Some(p) => match Policy::from_file(p, cache) {
                Ok(mut pol) => {
                    pol.limits = limits;
                    (Some(pol), None)
                }
                Err(e) => (None, Some(format!("{e:#}; the default policy decides instead"))),
            },
        };
        Ok((Policies { chosen, default }, cache.with_warning(warning)))
    }

    /// For the offline tools (`replay`, `simulate`): a policy that cannot be loaded is an
    /// error, because running the default in its place would measure the wrong thing.
    pub fn load_strict(path: Option<&Path>, limits: Limits, cache: &Cache) -> Result<Policies> {
        let mut default = Policy::default_policy(cache)?;
        default.limits = limits;
        let chosen = match path {
            None => None,
            Some(p) => {
                let mut pol = Policy::from_file(p, cache)?;
                pol.limits = limits;
                Some(pol)
            }
        };
        Ok(Policies { chosen, default })
    }

    /// The policy that decides when nothing fails.
    pub fn active(&self) -> &Policy {
        self.chosen.as_ref().unwrap_or(&self.default)
    }

    /// `policy NAME`, or `the default policy`.
    pub fn label(&self) -> String {
        match &self.chosen {
            Some(p) => format!("policy {}", p.name()),
            None => "the default policy".to_string(),
        }
    }

    /// Always an answer: the chosen policy's, else the default policy's, else (when even the
    /// default cannot decide, say out of fuel on a huge machine list) the default's rules run
    /// natively, else a decline. Every stand-in is named in the one warning.
    pub fn decide(&self, req: &Request, machines: &[MachineView]) -> Decided {
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        if let Some(p) = &self.chosen {
            match p.call(req, machines).and_then(|c| validate(&c.answer, req, machines).map(|_| c)) {
                Ok(c) => return Decided::new(c.answer, DecidedBy::Policy, c.fuel_used, started, failures),
                Err(e) => failures.push(format!("policy {} failed on {}: {e}", p.name(), req.drv_path)),
            }
        }
        let limits = self.default.limits.scaled_to(req, machines);
        match self
            .default
            .call_within(req, machines, limits)
            .and_then(|c| validate(&c.answer, req, machines).map(|_| c))
        {
            Ok(c) => return Decided::new(c.answer, DecidedBy::Default, c.fuel_used, started, failures),
            Err(e) => failures.push(format!("the embedded default policy failed on {}: {e}", req.drv_path)),
        }
        let answer = native::decide(req, machines);
        if validate(&answer, req, machines).is_ok() {
            failures.push("the default policy's rules decided natively".into());
            return Decided::new(answer, DecidedBy::Default, 0, started, failures);
        }
        // The native rules and the host's check disagree: a bug, but Nix still gets an answer.
        failures.push("its rules ranked a machine that does not fit, so the hook declined".into());
        let answer = Answer { decision: Decision::Decline, rejected: Vec::new() };
        Decided::new(answer, DecidedBy::Default, 0, started, failures)
    }
}

impl Decided {
    fn new(
        answer: Answer,
        by: DecidedBy,
        fuel_used: u64,
        started: std::time::Instant,
        failures: Vec<String>,
    ) -> Self {
        let warning = match by {
            DecidedBy::Policy => None,
            DecidedBy::Default if failures.is_empty() => None,
            // "policy P failed on D: why; the default policy decided instead", or the whole
            // chain when the default failed too.
            DecidedBy::Default if failures.len() == 1 => {
                Some(format!("{}; the default policy decided instead", failures[0]))
            }
            DecidedBy::Default => Some(failures.join("; ")),
        };
        Decided { answer, by, fuel_used, micros: started.elapsed().as_micros() as u64, warning }
    }
}
