//! Nix's own choice of build machine (`build-remote` of Nix ≥ 2.20 and Lix), one request at
//! a time: the default policy's whole decision, which the default component runs in Wasm and
//! the host runs natively when that cannot decide (docs/scheduling.md §1, §3 and §5).
//!
//! * A machine is **eligible** ("the right type") when it breaks none of Nix's rules
//!   ([`super::eligibility`]).
//! * Among eligible machines with a free slot (`slots-in-use < max-jobs`), the best is the one
//!   with the lowest `load / speed-factor` (float division, no rounding), then the highest
//!   speed factor, then the lowest load; ties go to the machine listed first.
//! * With no such machine: **postpone** when some eligible machine exists (it is only busy)
//!   and Nix cannot build locally right now (`!(am-willing && could-build-locally)`);
//!   otherwise **decline**.
//!
//! Nix only ever picks the best machine; this ranks all free eligible machines in that order
//! (stable, so its first entry is exactly Nix's pick) and gives the reason, in [`super::Misfit`]'s
//! words, for every machine it leaves out. Only `std`: it builds for the policies' wasm32
//! targets as it is.

use std::cmp::Ordering;
use std::ops::ControlFlow;

use super::{busy, each_broken_rule, Answer, Decision, MachineView, Request};

/// What one machine looks like for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fit {
    /// Eligible and has a free slot: a candidate. `load` is its slots in use.
    Free { load: u32, speed: f64 },
    /// Eligible (the right type) but every slot is taken, or `max-jobs` is 0.
    Full { reason: String },
    /// Not eligible; the reason names every rule it breaks, joined with "; ".
    Unfit { reason: String },
}

impl Fit {
    /// The machine is "the right type" (eligible), busy or not.
    pub fn is_eligible(&self) -> bool {
        !matches!(self, Fit::Unfit { .. })
    }
}

/// How `machine` fits `request`, in the words of [`super::Misfit`].
pub fn fit(request: &Request, machine: &MachineView) -> Fit {
    let mut broken = Vec::new();
    let _ = each_broken_rule(request, machine, &mut |misfit| {
        broken.push(misfit.to_string());
        ControlFlow::Continue(())
    });
    if !broken.is_empty() {
        return Fit::Unfit { reason: broken.join("; ") };
    }
    match busy(machine) {
        Some(misfit) => Fit::Full { reason: misfit.to_string() },
        None => Fit::Free { load: machine.slots_in_use, speed: machine.speed_factor },
    }
}

/// Compares two floats as `<`/`==` do for ordinary values (so `-0.0 == 0.0`), but totally:
/// NaN (only possible with an invalid speed factor) sorts after every number. This keeps
/// sorting well defined on bad input without changing the order of good input.
fn cmp_f64(a: f64, b: f64) -> Ordering {
    match a.partial_cmp(&b) {
        Some(ordering) => ordering,
        None => a.is_nan().cmp(&b.is_nan()),
    }
}

/// Nix's comparison of two free candidates (`load`, `speed`): `Less` means `a` is better.
/// Lower `load / speed` first, then higher speed, then lower load; `Equal` keeps file order.
pub fn compare_candidates(a: (u32, f64), b: (u32, f64)) -> Ordering {
    let (load_a, speed_a) = a;
    let (load_b, speed_b) = b;
    let score_a = f64::from(load_a) / speed_a;
    let score_b = f64::from(load_b) / speed_b;
    cmp_f64(score_a, score_b).then_with(|| cmp_f64(speed_b, speed_a)).then_with(|| load_a.cmp(&load_b))
}

/// The result of looking at every machine for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Indices of eligible machines with a free slot, in file order.
    pub free: Vec<u32>,
    /// Some machine is eligible ("right type"), free or not.
    pub right_type: bool,
    /// One fit per machine, in file order.
    pub fits: Vec<Fit>,
}

/// Looks at every machine for `request`.
pub fn assess(request: &Request, machines: &[MachineView]) -> Assessment {
    let fits: Vec<Fit> = machines.iter().map(|m| fit(request, m)).collect();
    let free = fits
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fit::Free { .. }))
        .map(|(i, _)| index(i))
        .collect();
    let right_type = fits.iter().any(Fit::is_eligible);
    Assessment { free, right_type, fits }
}

/// What Nix does when no machine has a free slot: postpone when an eligible machine exists
/// and the parent cannot build locally right now, else decline.
pub fn no_candidate_decision(request: &Request, right_type: bool) -> Decision {
    let can_build_locally = request.am_willing && request.could_build_locally;
    if right_type && !can_build_locally {
        Decision::Postpone
    } else {
        Decision::Decline
    }
}

/// Builds the answer for a ranking `ranked` (indices of free eligible machines, best first):
/// `try` when it is non-empty, else Nix's postpone/decline; every machine not in `ranked`
/// gets a rejection with its reason, in file order.
pub fn answer_with(request: &Request, assessment: &Assessment, ranked: Vec<u32>) -> Answer {
    // A mark per machine: looking each one up in the ranking would cost n² for n machines.
    let mut is_ranked = vec![false; assessment.fits.len()];
    for &i in &ranked {
        if let Some(mark) = is_ranked.get_mut(i as usize) {
            *mark = true;
        }
    }
    let rejected = assessment
        .fits
        .iter()
        .enumerate()
        .filter(|(i, _)| !is_ranked[*i])
        .map(|(i, f)| {
            let reason = match f {
                Fit::Full { reason } | Fit::Unfit { reason } => reason.clone(),
                // Only reachable when a policy leaves a free machine out of its ranking.
                Fit::Free { .. } => "not ranked by the policy".to_string(),
            };
            (index(i), reason)
        })
        .collect();
    let decision = if ranked.is_empty() {
        no_candidate_decision(request, assessment.right_type)
    } else {
        Decision::Try(ranked)
    };
    Answer { decision, rejected }
}

/// The free eligible machines of `assessment`, best first in Nix's order.
pub fn rank(assessment: &Assessment) -> Vec<u32> {
    // Each machine's `load / speed` is worked out once, not twice per comparison.
    let keys = assessment.free.iter().map(|&i| Key::of(assessment, i));
    rank_by_kinds(keys.clone()).unwrap_or_else(|| merge_sort(keys.collect()))
}

/// How many different keys [`rank_by_kinds`] sorts before it leaves the ranking to
/// [`merge_sort`]: its insertions cost the square of this.
const MAX_KINDS: usize = 64;

/// The ranking when the free machines have at most [`MAX_KINDS`] different keys, as a real
/// cluster does (a few kinds of machine, a few loads): the keys are sorted once, and the
/// machines are dealt into them in file order (a counting sort, stable as Nix's order needs).
/// At a thousand machines a comparison sort was half of the default policy's work in Wasm.
fn rank_by_kinds(keys: impl Iterator<Item = Key> + Clone) -> Option<Vec<u32>> {
    // The different keys in order, each with the number it got when first seen; and that
    // number for every machine (a key's place in `kinds` moves as others are inserted).
    let mut kinds: Vec<((u64, u64, u32), usize)> = Vec::new();
    let mut seen_as = Vec::with_capacity(keys.size_hint().0);
    for key in keys.clone() {
        let kind = key.kind();
        let number = match kinds.binary_search_by(|(k, _)| k.cmp(&kind)) {
            Ok(at) => kinds[at].1,
            Err(_) if kinds.len() == MAX_KINDS => return None,
            Err(at) => {
                kinds.insert(at, (kind, kinds.len()));
                kinds.len() - 1
            }
        };
        seen_as.push(number);
    }
    // Where the machines of each kind start in the ranking, by the kind's number.
    let mut count = vec![0; kinds.len()];
    for &number in &seen_as {
        count[number] += 1;
    }
    let mut next = vec![0; kinds.len()];
    let mut start = 0;
    for &(_, number) in &kinds {
        next[number] = start;
        start += count[number];
    }
    let mut ranked = vec![0; seen_as.len()];
    for (key, &number) in keys.zip(&seen_as) {
        ranked[next[number]] = key.machine;
        next[number] += 1;
    }
    Some(ranked)
}

/// A stable merge sort, written out: machines that compare equal keep file order, as in Nix,
/// and a thousand machines cost ten thousand comparisons, not half a million (an insertion
/// sort's). `slice::sort_by` would triple the size of the component.
fn merge_sort(mut ranked: Vec<Key>) -> Vec<u32> {
    let mut merged = ranked.clone();
    let mut width = 1;
    while width < ranked.len() {
        for start in (0..ranked.len()).step_by(2 * width) {
            let mid = (start + width).min(ranked.len());
            let end = (start + 2 * width).min(ranked.len());
            // Two runs already in order (common: idle machines of one speed) are copied.
            if mid == end || !ranked[mid].is_better_than(&ranked[mid - 1]) {
                merged[start..end].copy_from_slice(&ranked[start..end]);
                continue;
            }
            let (mut left, mut right, mut out) = (start, mid, start);
            while left < mid && right < end {
                // From the right only when strictly better: equals keep their order.
                if ranked[right].is_better_than(&ranked[left]) {
                    merged[out] = ranked[right];
                    right += 1;
                } else {
                    merged[out] = ranked[left];
                    left += 1;
                }
                out += 1;
            }
            // One run is used up; the rest of the other follows as it is.
            let rest = mid - left;
            merged[out..out + rest].copy_from_slice(&ranked[left..mid]);
            merged[out + rest..end].copy_from_slice(&ranked[right..end]);
        }
        std::mem::swap(&mut ranked, &mut merged);
        width *= 2;
    }
    ranked.into_iter().map(|k| k.machine).collect()
}

/// A float's place in the order of [`cmp_f64`], as an integer: `ordered_bits(a).cmp(&ordered_bits(b))
/// == cmp_f64(a, b)` for every `a` and `b`. Integers compare in one instruction, where the
/// float comparison with its NaN cases costs a dozen.
fn ordered_bits(x: f64) -> u64 {
    if x.is_nan() {
        return u64::MAX;
    }
    // `x + 0.0` turns -0.0 into 0.0, which compares equal to it.
    let bits = (x + 0.0).to_bits();
    // Positive floats order as their bits do; negative ones in reverse, below every positive.
    if bits >> 63 == 0 {
        bits | 1 << 63
    } else {
        !bits
    }
}

/// A free machine as `rank` compares it: [`compare_candidates`] worked out once, as integers.
#[derive(Clone, Copy)]
struct Key {
    machine: u32,
    /// `ordered_bits(load / speed)`: lower is better.
    score: u64,
    /// `!ordered_bits(speed)`: lower (faster) is better.
    speed: u64,
    load: u32,
}

impl Key {
    fn of(assessment: &Assessment, i: u32) -> Key {
        match assessment.fits[i as usize] {
            Fit::Free { load, speed } => Key {
                machine: i,
                score: ordered_bits(f64::from(load) / speed),
                speed: !ordered_bits(speed),
                load,
            },
            _ => unreachable!("only free machines are ranked"),
        }
    }

    /// What [`compare_candidates`] compares, in an order where lower is better.
    #[inline]
    fn kind(&self) -> (u64, u64, u32) {
        (self.score, self.speed, self.load)
    }

    /// `compare_candidates(self, other) == Less`.
    #[inline]
    fn is_better_than(&self, other: &Key) -> bool {
        self.kind() < other.kind()
    }
}

/// The default policy: Nix's choice, with every free eligible machine ranked.
pub fn decide(request: &Request, machines: &[MachineView]) -> Answer {
    let assessment = assess(request, machines);
    let ranked = rank(&assessment);
    answer_with(request, &assessment, ranked)
}

fn index(i: usize) -> u32 {
    // The host passes at most u32::MAX machines (WIT indices are u32).
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(system: &str, features: &[&str]) -> Request {
        Request {
            drv_path: "/nix/store/00000000000000000000000000000000-hello-2.12.drv".into(),
            system: system.into(),
            required_features: features.iter().map(|s| s.to_string()).collect(),
            am_willing: false,
            could_build_locally: false,
            local: Default::default(),
        }
    }

    fn machine(uri: &str, system: &str, max_jobs: u32, speed: f64, load: u32) -> MachineView {
        MachineView {
            uri: uri.into(),
            systems: vec![system.into()],
            max_jobs,
            speed_factor: speed,
            supported_features: vec![],
            mandatory_features: vec![],
            slots_in_use: load,
            enabled: true,
            down_reason: None,
            facts: Default::default(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn reasons(answer: &Answer) -> Vec<(u32, &str)> {
        answer.rejected.iter().map(|(m, r)| (*m, r.as_str())).collect()
    }

    const X86: &str = "x86_64-linux";

    #[test]
    fn empty_machine_list_declines() {
        let a = decide(&req(X86, &[]), &[]);
        assert_eq!(a.decision, Decision::Decline);
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn single_idle_machine_is_tried() {
        let a = decide(&req(X86, &[]), &[machine("ssh://a", X86, 1, 1.0, 0)]);
        assert_eq!(a.decision, Decision::Try(vec![0]));
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn lower_load_per_speed_first() {
        let ms = [
            machine("ssh://a", X86, 4, 1.0, 2), // 2.0
            machine("ssh://b", X86, 4, 2.0, 1), // 0.5
            machine("ssh://c", X86, 4, 1.0, 1), // 1.0
        ];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 2, 0]));
    }

    #[test]
    fn float_division_idle_slow_beats_busy_fast() {
        // docs/scheduling.md §3: F (speed 4) with one job scores 0.25 > 0, so idle S wins.
        // Nix 2.8-2.19 (integer division) would have picked F.
        let ms = [machine("ssh://fast", X86, 8, 4.0, 1), machine("ssh://slow", X86, 8, 1.0, 0)];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 0]));
    }

    #[test]
    fn equal_score_higher_speed_wins() {
        // Both idle: score 0 each; higher speed first even though listed second.
        let ms = [machine("ssh://slow", X86, 2, 1.0, 0), machine("ssh://fast", X86, 2, 3.0, 0)];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 0]));
        // Equal score with loads: 2/2 == 1/1, speed 2 wins.
        let ms = [machine("ssh://a", X86, 4, 1.0, 1), machine("ssh://b", X86, 4, 2.0, 2)];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 0]));
    }

    #[test]
    fn equal_score_and_speed_lower_load_wins() {
        // Only reachable where the division saturates: speed tiny → every busy score is +inf.
        let tiny = 1e-320;
        let ms = [
            machine("ssh://a", X86, 8, tiny, 3),
            machine("ssh://b", X86, 8, tiny, 1),
            machine("ssh://c", X86, 8, tiny, 2),
        ];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 2, 0]));
        // Infinite speed: every score is 0, speeds equal → lower load.
        let ms = [machine("ssh://a", X86, 8, f64::INFINITY, 5), machine("ssh://b", X86, 8, f64::INFINITY, 4)];
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![1, 0]));
    }

    #[test]
    fn full_ties_go_to_first_listed() {
        let ms: Vec<MachineView> = (0..5).map(|i| machine(&format!("ssh://m{i}"), X86, 2, 1.5, 1)).collect();
        assert_eq!(decide(&req(X86, &[]), &ms).decision, Decision::Try(vec![0, 1, 2, 3, 4]));
    }

    #[test]
    fn builtin_runs_on_any_system() {
        let ms = [machine("ssh://arm", "aarch64-linux", 1, 1.0, 0), machine("ssh://none", X86, 1, 1.0, 0)];
        let mut m_none = ms[1].clone();
        m_none.systems.clear();
        let ms = [ms[0].clone(), m_none];
        assert_eq!(decide(&req("builtin", &[]), &ms).decision, Decision::Try(vec![0, 1]));
    }

    #[test]
    fn ordered_bits_order_floats_as_cmp_f64_does() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.0,
            -1.0,
            -1e-320,
            -0.0,
            0.0,
            1e-320,
            0.5,
            1.0,
            3.0,
            1e300,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for a in values {
            for b in values {
                assert_eq!(ordered_bits(a).cmp(&ordered_bits(b)), cmp_f64(a, b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_long_list_ranks_as_a_stable_sort_does() {
        // Many ties (loads 0-3, speeds 1-3) over 1 000 machines, in a scrambled order.
        let free: Vec<u32> = (0..1000).collect();
        let key = |i: u32| (i * 7 % 4, f64::from(1 + i * 13 % 3));
        let fits = free.iter().map(|&i| Fit::Free { load: key(i).0, speed: key(i).1 }).collect();
        let assessment = Assessment { free: free.clone(), right_type: true, fits };
        let mut expected = free;
        expected.sort_by(|&a, &b| compare_candidates(key(a), key(b)));
        assert_eq!(rank(&assessment), expected);
    }

    #[test]
    fn many_kinds_of_machine_rank_as_a_stable_sort_does() {
        // Around MAX_KINDS different keys, below and above: counted or merge-sorted, the
        // order is the same.
        for kinds in [MAX_KINDS - 1, MAX_KINDS, MAX_KINDS + 1, 700] {
            let free: Vec<u32> = (0..1000).collect();
            let key = |i: u32| (0, 1.0 + f64::from(i * 37 % kinds as u32) / 8.0);
            let fits = free.iter().map(|&i| Fit::Free { load: key(i).0, speed: key(i).1 }).collect();
            let assessment = Assessment { free: free.clone(), right_type: true, fits };
            let mut expected = free;
            expected.sort_by(|&a, &b| compare_candidates(key(a), key(b)));
            assert_eq!(rank(&assessment), expected, "{kinds} kinds of speed");
        }
    }

    #[test]
    fn odd_speeds_rank_as_a_stable_sort_does() {
        // Zero, negative, tiny, infinite and NaN speeds (all invalid but possible in a
        // trace), with loads that make equal scores and every kind of tie.
        let speeds = [0.0, -0.0, -1.0, 1e-320, 0.5, 1.0, 2.0, f64::INFINITY, f64::NAN];
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let n = 1 + rng.next(40) as u32;
            let free: Vec<u32> = (0..n).collect();
            let keys: Vec<(u32, f64)> = free
                .iter()
                .map(|_| (rng.next(4) as u32, speeds[rng.next(speeds.len() as u64) as usize]))
                .collect();
            let fits = keys.iter().map(|&(load, speed)| Fit::Free { load, speed }).collect();
            let assessment = Assessment { free: free.clone(), right_type: true, fits };
            let mut expected = free;
            expected.sort_by(|&a, &b| compare_candidates(keys[a as usize], keys[b as usize]));
            assert_eq!(rank(&assessment), expected, "{keys:?}");
        }
    }

    #[test]
    fn wrong_system_is_rejected_with_reason_and_declined() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.systems.push("i686-linux".into());
        let a = decide(&req("aarch64-linux", &[]), &[m]);
        assert_eq!(a.decision, Decision::Decline);
        assert_eq!(
            reasons(&a),
            vec![(0, "system `aarch64-linux` is not among its systems (x86_64-linux, i686-linux)")]
        );
    }

    #[test]
    fn machine_without_systems() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.systems.clear();
        let a = decide(&req(X86, &[]), &[m]);
        assert_eq!(reasons(&a), vec![(0, "system `x86_64-linux` is not among its systems (none)")]);
    }

    #[test]
    fn required_features_must_be_supported_or_mandatory() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.supported_features = strings(&["big-parallel"]);
        m.mandatory_features = strings(&["benchmark"]);
        // Required features satisfied by supported ∪ mandatory.
        let a = decide(&req(X86, &["benchmark", "big-parallel"]), &[m.clone()]);
        assert_eq!(a.decision, Decision::Try(vec![0]));
        // kvm missing.
        let a = decide(&req(X86, &["benchmark", "kvm"]), &[m.clone()]);
        assert_eq!(a.decision, Decision::Decline);
        assert_eq!(reasons(&a), vec![(0, "does not support the required feature `kvm`")]);
    }

    #[test]
    fn mandatory_features_must_be_required() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.supported_features = strings(&["kvm"]);
        m.mandatory_features = strings(&["benchmark"]);
        let a = decide(&req(X86, &["kvm"]), &[m]);
        assert_eq!(a.decision, Decision::Decline);
        assert_eq!(
            reasons(&a),
            vec![(0, "mandatory feature `benchmark` is not among the derivation's required features")]
        );
    }

    #[test]
    fn every_broken_rule_is_named() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.enabled = false;
        m.mandatory_features = strings(&["benchmark"]);
        let a = decide(&req("aarch64-linux", &["kvm", "nixos-test"]), &[m]);
        assert_eq!(
            reasons(&a),
            vec![(
                0,
                "disabled: connection failed earlier; \
                 system `aarch64-linux` is not among its systems (x86_64-linux); \
                 does not support the required feature `kvm`; does not support the required feature `nixos-test`; \
                 mandatory feature `benchmark` is not among the derivation's required features"
            )]
        );
    }

    #[test]
    fn disabled_machine_is_not_right_type() {
        let mut m = machine("ssh://a", X86, 1, 1.0, 0);
        m.enabled = false;
        let a = decide(&req(X86, &[]), &[m]);
        // Not right type → decline even though the parent cannot build locally.
        assert_eq!(a.decision, Decision::Decline);
        assert_eq!(reasons(&a), vec![(0, "disabled: connection failed earlier")]);
    }

    #[test]
    fn busy_right_type_postpones_unless_local_build_possible() {
        let ms = [machine("ssh://a", X86, 2, 1.0, 2)];
        for (willing, could, expected) in [
            (false, false, Decision::Postpone),
            (true, false, Decision::Postpone),
            (false, true, Decision::Postpone),
            (true, true, Decision::Decline),
        ] {
            let mut r = req(X86, &[]);
            r.am_willing = willing;
            r.could_build_locally = could;
            let a = decide(&r, &ms);
            assert_eq!(a.decision, expected, "am-willing={willing} could={could}");
            assert_eq!(reasons(&a), vec![(0, "all 2 slots in use")]);
        }
    }

    #[test]
    fn single_slot_wording() {
        let a = decide(&req(X86, &[]), &[machine("ssh://a", X86, 1, 1.0, 1)]);
        assert_eq!(reasons(&a), vec![(0, "its 1 slot is in use")]);
    }

    #[test]
    fn max_jobs_zero_is_right_type_but_never_free() {
        let ms = [machine("ssh://a", X86, 0, 1.0, 0)];
        let a = decide(&req(X86, &[]), &ms);
        assert_eq!(a.decision, Decision::Postpone);
        assert_eq!(reasons(&a), vec![(0, "max-jobs is 0: it never takes a build")]);
    }

    #[test]
    fn slots_in_use_above_max_jobs_counts_as_full() {
        let a = decide(&req(X86, &[]), &[machine("ssh://a", X86, 2, 1.0, 7)]);
        assert_eq!(a.decision, Decision::Postpone);
        assert_eq!(reasons(&a), vec![(0, "all 2 slots in use")]);
    }

    #[test]
    fn try_lists_free_and_rejects_the_rest_in_file_order() {
        let mut arm = machine("ssh://arm", "aarch64-linux", 4, 1.0, 0);
        arm.supported_features = strings(&["kvm"]);
        let ms = [
            arm,
            machine("ssh://full", X86, 2, 1.0, 2),
            machine("ssh://busy", X86, 4, 1.0, 3),
            machine("ssh://idle", X86, 4, 1.0, 0),
        ];
        let a = decide(&req(X86, &[]), &ms);
        assert_eq!(a.decision, Decision::Try(vec![3, 2]));
        assert_eq!(
            reasons(&a),
            vec![
                (0, "system `x86_64-linux` is not among its systems (aarch64-linux)"),
                (1, "all 2 slots in use"),
            ]
        );
    }

    #[test]
    fn nan_and_zero_speed_do_not_panic() {
        let ms = [
            machine("ssh://nan", X86, 4, f64::NAN, 0),
            machine("ssh://zero", X86, 4, 0.0, 1),      // 1/0 = +inf
            machine("ssh://zero-idle", X86, 4, 0.0, 0), // 0/0 = NaN
            machine("ssh://ok", X86, 4, 1.0, 3),
        ];
        let a = decide(&req(X86, &[]), &ms);
        let Decision::Try(order) = a.decision else { panic!("expected try") };
        assert_eq!(order[0], 3);
        assert_eq!(order[1], 1);
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn answer_with_custom_ranking_rejects_unranked_free_machines() {
        let ms = [machine("ssh://a", X86, 1, 1.0, 0), machine("ssh://b", X86, 1, 1.0, 0)];
        let r = req(X86, &[]);
        let assessment = assess(&r, &ms);
        let a = answer_with(&r, &assessment, vec![1]);
        assert_eq!(a.decision, Decision::Try(vec![1]));
        assert_eq!(reasons(&a), vec![(0, "not ranked by the policy")]);
    }

    /// Nix's loop from docs/scheduling.md §1 and §3, written out literally, as a reference.
    fn nix_pick(request: &Request, machines: &[MachineView]) -> (Option<usize>, bool) {
        let mut right_type = false;
        let mut best: Option<(usize, u32, f64)> = None;
        for (i, m) in machines.iter().enumerate() {
            if crate::eligibility(request, m).is_err() {
                continue;
            }
            right_type = true;
            let load = m.slots_in_use.min(m.max_jobs);
            if load >= m.max_jobs {
                continue;
            }
            let s = m.speed_factor;
            let better = match best {
                None => true,
                Some((_, bl, bs)) => {
                    let (q, bq) = (f64::from(load) / s, f64::from(bl) / bs);
                    q < bq || (q == bq && s > bs) || (q == bq && s == bs && load < bl)
                }
            };
            if better {
                best = Some((i, load, s));
            }
        }
        (best.map(|b| b.0), right_type)
    }

    /// Small deterministic generator so the comparison test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn first_choice_matches_nix_loop_on_random_inputs() {
        let systems = ["x86_64-linux", "aarch64-linux", "builtin"];
        let features = ["kvm", "big-parallel", "benchmark", "nixos-test"];
        let speeds = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
        let mut rng = Lcg(42);
        let pick = |rng: &mut Lcg, pool: &[&str], p: u64| -> Vec<String> {
            pool.iter().filter(|_| rng.next(100) < p).map(|s| s.to_string()).collect()
        };
        for case in 0..20_000 {
            let n = rng.next(7) as usize;
            let machines: Vec<MachineView> = (0..n)
                .map(|i| {
                    let max_jobs = rng.next(5) as u32;
                    MachineView {
                        uri: format!("ssh://m{i}"),
                        systems: pick(&mut rng, &systems[..2], 70),
                        max_jobs,
                        speed_factor: speeds[rng.next(speeds.len() as u64) as usize],
                        supported_features: pick(&mut rng, &features, 40),
                        mandatory_features: pick(&mut rng, &features, 8),
                        slots_in_use: rng.next(u64::from(max_jobs) + 1) as u32,
                        enabled: rng.next(10) != 0,
                        down_reason: None,
                        facts: Default::default(),
                    }
                })
                .collect();
            let mut request = Request {
                system: systems[rng.next(3) as usize].to_string(),
                required_features: pick(&mut rng, &features, 25),
                am_willing: rng.next(2) == 0,
                could_build_locally: rng.next(2) == 0,
                ..Request::default()
            };
            request.required_features.sort();
            let (nix_best, nix_right_type) = nix_pick(&request, &machines);
            let answer = decide(&request, &machines);
            match (nix_best, &answer.decision) {
                (Some(b), Decision::Try(order)) => {
                    assert_eq!(order[0] as usize, b, "case {case}: {machines:?} {request:?}");
                    // Every ranked machine is free and eligible; all others are rejected.
                    assert_eq!(order.len() + answer.rejected.len(), machines.len());
                    // The ranking is a sorted order: each is no worse than the next.
                    for w in order.windows(2) {
                        let (a, b) = (&machines[w[0] as usize], &machines[w[1] as usize]);
                        assert_ne!(
                            compare_candidates(
                                (a.slots_in_use, a.speed_factor),
                                (b.slots_in_use, b.speed_factor)
                            ),
                            Ordering::Greater
                        );
                    }
                }
                (None, d) => {
                    let can_local = request.am_willing && request.could_build_locally;
                    let expected =
                        if nix_right_type && !can_local { Decision::Postpone } else { Decision::Decline };
                    assert_eq!(*d, expected, "case {case}");
                    assert_eq!(answer.rejected.len(), machines.len());
                }
                (Some(_), d) => panic!("case {case}: Nix picks a machine, policy says {d:?}"),
            }
        }
    }
}
