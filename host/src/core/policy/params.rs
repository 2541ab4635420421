//! The arguments and the answer of `decide`, as wasmtime lowers and lifts them.
//!
//! The bindgen types own their strings, so passing the host's `MachineView`s through them
//! copied every string and list of every machine on every call, and freed them after; and
//! wasmtime's derived lowering looks the guest's memory up again for every field it writes
//! (some twenty times per machine). At a thousand machines the two were a third of a
//! decision. Here the request borrows from the host's `Request`, and a machine is lowered
//! straight from its `MachineView` by [`store_machines`].
//!
//! Types are still checked by wasmtime, by name and shape, when `decide` is looked up: the
//! records below describe the contract's types and are never built. The bindgen modules
//! check a whole component against its contract version when it is loaded.

use std::marker::PhantomData;
use std::ops::Range;

use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext};
use wasmtime::component::{ComponentType, Lift, Lower};

use nwh_decision::{self as decision, Decision, MachineView, Request};

/// WIT `request` (the same in every contract version).
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

impl<'a> RequestArg<'a> {
    pub fn of(r: &'a Request) -> Self {
        RequestArg {
            drv_path: &r.drv_path,
            system: &r.system,
            required_features: &r.required_features,
            am_willing: r.am_willing,
            could_build_locally: r.could_build_locally,
        }
    }
}

/// WIT `machine` of contract 0.2 (`down-reason` added): only its type is used.
#[allow(dead_code)]
#[derive(ComponentType)]
#[component(record)]
pub struct MachineV0_2 {
    uri: String,
    systems: Vec<String>,
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    #[component(name = "supported-features")]
    supported_features: Vec<String>,
    #[component(name = "mandatory-features")]
    mandatory_features: Vec<String>,
    #[component(name = "slots-in-use")]
    slots_in_use: u32,
    enabled: bool,
    #[component(name = "down-reason")]
    down_reason: Option<String>,
}

/// WIT `machine` of contract 0.1: only its type is used.
#[allow(dead_code)]
#[derive(ComponentType)]
#[component(record)]
pub struct MachineV0_1 {
    uri: String,
    systems: Vec<String>,
    #[component(name = "max-jobs")]
    max_jobs: u32,
    #[component(name = "speed-factor")]
    speed_factor: f64,
    #[component(name = "supported-features")]
    supported_features: Vec<String>,
    #[component(name = "mandatory-features")]
    mandatory_features: Vec<String>,
    #[component(name = "slots-in-use")]
    slots_in_use: u32,
    enabled: bool,
}

/// A contract version's `machine` record type.
pub trait MachineRecord: ComponentType + 'static {
    /// 0.2 added `down-reason` as the last field.
    const HAS_DOWN_REASON: bool;
}

impl MachineRecord for MachineV0_2 {
    const HAS_DOWN_REASON: bool = true;
}

impl MachineRecord for MachineV0_1 {
    const HAS_DOWN_REASON: bool = false;
}

/// A machine passed as the `machine` record `R`, lowered from the host's view of it.
pub struct MachineArg<'a, R>(&'a MachineView, PhantomData<R>);

impl<'a, R> MachineArg<'a, R> {
    pub fn of(m: &'a MachineView) -> Self {
        MachineArg(m, PhantomData)
    }
}

// SAFETY: the type information is `R`'s, derived by wasmtime from the contract's record; the
// lowering below writes exactly that record.
#[allow(unsafe_code)]
unsafe impl<R: MachineRecord> ComponentType for MachineArg<'_, R> {
    type Lower = R::Lower;
    const ABI: CanonicalAbiInfo = R::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        R::typecheck(ty, types)
    }
}

// SAFETY: `store_machines` writes a record of exactly `Self::SIZE32` bytes at each element's
// offset, in the layout `Offsets` works out from the same `ABI` constants as `R`'s derived
// `ComponentType`, and every string and list it points to was allocated with the guest's
// `realloc` and written within its bounds.
#[allow(unsafe_code)]
unsafe impl<R: MachineRecord> Lower for MachineArg<'_, R> {
    fn linear_lower_to_flat<T>(
        &self,
        _cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        _dst: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        // `decide` takes a list of machines; a machine is never a flat argument.
        wasmtime::bail!("a machine record is lowered only as an element of a list")
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        store_machines::<T, R>(cx, ty, offset, std::slice::from_ref(self))
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        store_machines::<T, R>(cx, ty, offset, items)
    }
}

/// Where each field of a machine record lies, by the canonical ABI's rule (each field at the
/// next multiple of its alignment), worked out from wasmtime's own ABI constants.
struct Offsets {
    uri: usize,
    systems: usize,
    max_jobs: usize,
    speed_factor: usize,
    supported_features: usize,
    mandatory_features: usize,
    slots_in_use: usize,
    enabled: usize,
    /// The option's discriminant (a byte), and its string after it at the string's alignment.
    down_reason: usize,
    down_reason_string: usize,
}

impl Offsets {
    fn of<R: MachineRecord>() -> Offsets {
        let string = &<&str as ComponentType>::ABI;
        let list = &<&[String] as ComponentType>::ABI;
        let mut at = 0;
        let mut next = |abi: &CanonicalAbiInfo| abi.next_field32_size(&mut at);
        let mut o = Offsets {
            uri: next(string),
            systems: next(list),
            max_jobs: next(&u32::ABI),
            speed_factor: next(&f64::ABI),
            supported_features: next(list),
            mandatory_features: next(list),
            slots_in_use: next(&u32::ABI),
            enabled: next(&bool::ABI),
            down_reason: 0,
            down_reason_string: 0,
        };
        if R::HAS_DOWN_REASON {
            o.down_reason = next(&<Option<&str> as ComponentType>::ABI);
            o.down_reason_string = o.down_reason + string.align32 as usize;
        }
        o
    }
}

/// The longest string the canonical ABI passes (its length must fit in 31 bits).
const MAX_STRING_BYTES: usize = (1 << 31) - 1;

/// Machines lowered per look at the guest's memory; the bookkeeping stays a few KiB.
const CHUNK: usize = 64;

/// Lowers `items` into the guest's memory at `offset` as wasmtime's derived lowering would,
/// with the same `realloc` calls in the same order (field by field, a list before its
/// elements), but writing the records, lists and strings of a chunk of machines through one
/// view of memory, after the chunk's allocations (the guest may grow its memory in `realloc`).
///
/// Only for UTF-8 guests (Rust, C, Python and JS all are); another string encoding takes the
/// field-by-field path, which transcodes.
fn store_machines<T, R: MachineRecord>(
    cx: &mut LowerContext<'_, T>,
    ty: InterfaceType,
    offset: usize,
    items: &[MachineArg<'_, R>],
) -> wasmtime::Result<()> {
    if cx.options().string_encoding != StringEncoding::Utf8 || tests::field_by_field() {
        return store_field_by_field::<T, R>(cx, ty, offset, items);
    }
    let at = Offsets::of::<R>();
    let size = R::SIZE32;
    let mut placed = Placed::default();
    for (c, chunk) in items.chunks(CHUNK).enumerate() {
        placed.clear();
        for m in chunk {
            placed.machine(cx, m.0, R::HAS_DOWN_REASON)?;
        }
        let memory = cx.as_slice_mut();
        let out_of_bounds = || wasmtime::format_err!("the guest's allocation lies outside its memory");
        for &(ptr, bytes) in &placed.strings {
            memory.get_mut(ptr..ptr + bytes.len()).ok_or_else(out_of_bounds)?.copy_from_slice(bytes);
        }
        for (ptr, elements) in &placed.lists {
            let array = memory.get_mut(*ptr..*ptr + 8 * elements.len()).ok_or_else(out_of_bounds)?;
            for (slot, &(string, bytes)) in array.chunks_exact_mut(8).zip(&placed.strings[elements.clone()]) {
                put_pair(slot, 0, (string, bytes.len()));
            }
        }
        for (i, (m, p)) in chunk.iter().zip(&placed.machines).enumerate() {
            let m = m.0;
            let start = offset + (c * CHUNK + i) * size;
            let record = memory.get_mut(start..start + size).ok_or_else(out_of_bounds)?;
            record.fill(0);
            put_pair(record, at.uri, p.uri);
            put_pair(record, at.systems, p.systems);
            record[at.max_jobs..][..4].copy_from_slice(&m.max_jobs.to_le_bytes());
            record[at.speed_factor..][..8].copy_from_slice(&m.speed_factor.to_bits().to_le_bytes());
            put_pair(record, at.supported_features, p.supported_features);
            put_pair(record, at.mandatory_features, p.mandatory_features);
            record[at.slots_in_use..][..4].copy_from_slice(&m.slots_in_use.to_le_bytes());
            record[at.enabled] = u8::from(m.enabled);
            if let Some(why) = p.down_reason {
                record[at.down_reason] = 1;
                put_pair(record, at.down_reason_string, why);
            }
        }
    }
    Ok(())
}

/// Where the strings and lists of a chunk of machines were allocated.
#[derive(Default)]
struct Placed<'s> {
    /// Every string, with its place in the guest's memory.
    strings: Vec<(usize, &'s [u8])>,
    /// Every list of strings: its array's place, and its elements in `strings`.
    lists: Vec<(usize, Range<usize>)>,
    machines: Vec<PlacedMachine>,
}

/// (pointer, length) of each string and list of one machine.
struct PlacedMachine {
    uri: (usize, usize),
    systems: (usize, usize),
    supported_features: (usize, usize),
    mandatory_features: (usize, usize),
    down_reason: Option<(usize, usize)>,
}

impl<'s> Placed<'s> {
    fn clear(&mut self) {
        self.strings.clear();
        self.lists.clear();
        self.machines.clear();
    }

    /// Allocates a machine's strings and lists, in the order of its fields.
    fn machine<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        m: &'s MachineView,
        with_down_reason: bool,
    ) -> wasmtime::Result<()> {
        let placed = PlacedMachine {
            uri: self.string(cx, &m.uri)?,
            systems: self.list(cx, &m.systems)?,
            supported_features: self.list(cx, &m.supported_features)?,
            mandatory_features: self.list(cx, &m.mandatory_features)?,
            down_reason: match m.down_reason.as_deref().filter(|_| with_down_reason) {
                Some(why) => Some(self.string(cx, why)?),
                None => None,
            },
        };
        self.machines.push(placed);
        Ok(())
    }

    fn string<T>(&mut self, cx: &mut LowerContext<'_, T>, s: &'s str) -> wasmtime::Result<(usize, usize)> {
        if s.len() > MAX_STRING_BYTES {
            wasmtime::bail!("string length of {} too large to copy into wasm", s.len());
        }
        let ptr = cx.realloc(0, 0, 1, s.len())?;
        self.strings.push((ptr, s.as_bytes()));
        Ok((ptr, s.len()))
    }

    fn list<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        list: &'s [String],
    ) -> wasmtime::Result<(usize, usize)> {
        let string = &<&str as ComponentType>::ABI;
        let Some(bytes) = list.len().checked_mul(string.size32 as usize) else {
            wasmtime::bail!("size overflow copying a list");
        };
        let ptr = cx.realloc(0, 0, string.align32, bytes)?;
        let first = self.strings.len();
        for s in list {
            self.string(cx, s)?;
        }
        self.lists.push((ptr, first..self.strings.len()));
        Ok((ptr, list.len()))
    }
}

/// A (pointer, length) pair, as the canonical ABI stores strings and lists: two u32s.
fn put_pair(to: &mut [u8], at: usize, (ptr, len): (usize, usize)) {
    // Both fit: pointers come from a 32-bit guest's `realloc`, lengths were checked.
    to[at..][..4].copy_from_slice(&(ptr as u32).to_le_bytes());
    to[at + 4..][..4].copy_from_slice(&(len as u32).to_le_bytes());
}

/// The lowering the derived `Lower` does, field by field, for guests whose strings are not
/// UTF-8 (wasmtime transcodes them).
fn store_field_by_field<T, R: MachineRecord>(
    cx: &mut LowerContext<'_, T>,
    ty: InterfaceType,
    offset: usize,
    items: &[MachineArg<'_, R>],
) -> wasmtime::Result<()> {
    let InterfaceType::Record(record) = ty else { wasmtime::bail!("a machine is not a record") };
    let types: Vec<InterfaceType> = cx.types[record].fields.iter().map(|f| f.ty).collect();
    let at = Offsets::of::<R>();
    for (i, m) in items.iter().enumerate() {
        let (base, m) = (offset + i * R::SIZE32, m.0);
        m.uri.as_str().linear_lower_to_memory(cx, types[0], base + at.uri)?;
        m.systems.as_slice().linear_lower_to_memory(cx, types[1], base + at.systems)?;
        m.max_jobs.linear_lower_to_memory(cx, types[2], base + at.max_jobs)?;
        m.speed_factor.linear_lower_to_memory(cx, types[3], base + at.speed_factor)?;
        m.supported_features.as_slice().linear_lower_to_memory(cx, types[4], base + at.supported_features)?;
        m.mandatory_features.as_slice().linear_lower_to_memory(cx, types[5], base + at.mandatory_features)?;
        m.slots_in_use.linear_lower_to_memory(cx, types[6], base + at.slots_in_use)?;
        m.enabled.linear_lower_to_memory(cx, types[7], base + at.enabled)?;
        if R::HAS_DOWN_REASON {
            m.down_reason.as_deref().linear_lower_to_memory(cx, types[8], base + at.down_reason)?;
        }
    }
    Ok(())
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

#[cfg(not(test))]
mod tests {
    pub fn field_by_field() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use crate::core::policy::{cache::Cache, Policy};
    use nwh_decision::{MachineView, Request};

    thread_local! {
        static FIELD_BY_FIELD: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether this test thread lowers machines the way wasmtime's derived code does.
    pub fn field_by_field() -> bool {
        FIELD_BY_FIELD.with(Cell::get)
    }

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
        }
    }

    /// The machines lowered a chunk at a time reach the policy exactly as wasmtime's own
    /// lowering passes them: every field of every machine, across chunk boundaries, for both
    /// contract versions. The default policy names systems, features and down reasons in its
    /// rejections, and ranks by slots and speed, so its answers show any difference.
    #[test]
    fn machines_reach_the_policy_as_wasmtime_would_pass_them() {
        let old_minor =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies/old-minor.wasm");
        let policies = [
            Policy::default_policy(&Cache::disabled()).unwrap(),
            Policy::from_file(&old_minor, &Cache::disabled()).unwrap(),
        ];
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
            };
            for policy in &policies {
                let fast = policy.call(&request, &machines).unwrap().answer;
                FIELD_BY_FIELD.with(|f| f.set(true));
                let derived = policy.call(&request, &machines).unwrap().answer;
                FIELD_BY_FIELD.with(|f| f.set(false));
                assert_eq!(fast, derived, "{} on {system}", policy.name());
                assert!(!fast.rejected.is_empty(), "the machines exercise rejections");
            }
        }
    }
}
