"""Nix's own choice of build machine, in plain Python (no bindings, no WASI).

The same rules, order and words as the default policy (policies/default/src/logic.rs), so
that this component and the default give the same answer, rejections included:

* A machine is eligible ("the right type") when it is enabled, builds the derivation's system
  (`builtin` builds everywhere), supports every required feature (supported + mandatory), and
  every one of its mandatory features is required by the derivation.
* Among eligible machines with a free slot (slots-in-use < max-jobs), the best has the lowest
  slots-in-use / speed-factor (IEEE float division), then the highest speed factor, then the
  lowest load; ties go to the machine listed first (a stable sort).
* With no such machine: postpone when some eligible machine exists (it is only busy) and Nix
  cannot build locally right now (not (am-willing and could-build-locally)); else decline.
* Every machine not ranked gets a reason, in file order.

Functions take and return plain values (duck-typed records with the WIT field names in
snake_case), so this module runs under any Python: `python3 -m doctest logic.py`.
"""

import math

DECLINE = "decline"
POSTPONE = "postpone"


def eligibility_problems(request, machine):
    """Why `machine` is not eligible for `request`, one phrase per broken rule, in Nix's order
    of checks; empty when eligible."""
    problems = []
    if not machine.enabled:
        # Since WIT 0.2.0 the host says why, in a whole phrase; absent on older hosts or when
        # it does not know.
        why = getattr(machine, "down_reason", None)
        if why is not None:
            problems.append(why)
        else:
            problems.append("disabled: connection failed earlier")
    if request.system != "builtin" and request.system not in machine.systems:
        systems = ", ".join(machine.systems) if machine.systems else "none"
        problems.append(f"system `{request.system}` is not among its systems ({systems})")
    for feature in request.required_features:
        if feature not in machine.supported_features and feature not in machine.mandatory_features:
            problems.append(f"does not support the required feature `{feature}`")
    for feature in machine.mandatory_features:
        if feature not in request.required_features:
            problems.append(
                f"mandatory feature `{feature}` is not among the derivation's required features"
            )
    return problems


def busy_reason(machine):
    """Why an eligible machine cannot take a build now, or None when it has a free slot.

    >>> class M: max_jobs, slots_in_use = 2, 2
    >>> busy_reason(M)
    'all 2 slots in use'
    """
    if machine.max_jobs == 0:
        return "max-jobs is 0: it never takes a build"
    if machine.slots_in_use >= machine.max_jobs:
        if machine.max_jobs == 1:
            return "its 1 slot is in use"
        return f"all {machine.max_jobs} slots in use"
    return None


def divide(a, b):
    """a / b as IEEE 754 (and Rust) divide: no exception for a zero divisor.

    >>> divide(1, 0.0), divide(1, -0.0), math.isnan(divide(0, 0.0))
    (inf, -inf, True)
    """
    if b == 0.0:
        if a == 0 or math.isnan(a) or math.isnan(b):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def compare_floats(a, b):
    """Orders floats as `<` does, with NaN after every number (and equal to NaN)."""
    a_nan, b_nan = math.isnan(a), math.isnan(b)
    if a_nan or b_nan:
        return int(a_nan) - int(b_nan)
    return (a > b) - (a < b)


def compare_candidates(a, b):
    """Nix's order of two free machines, each (load, speed): negative when `a` is better."""
    load_a, speed_a = a
    load_b, speed_b = b
    return (
        compare_floats(divide(load_a, speed_a), divide(load_b, speed_b))
        or compare_floats(speed_b, speed_a)
        or (load_a > load_b) - (load_a < load_b)
    )


def rank(candidates):
    """Indices of `candidates` ((index, load, speed), file order), best first; a stable
    insertion sort, as the default policy does, so equal machines keep file order."""
    ranked = []
    for index, load, speed in candidates:
        at = 0
        for pos in range(len(ranked) - 1, -1, -1):
            _, other_load, other_speed = ranked[pos]
            if compare_candidates((other_load, other_speed), (load, speed)) <= 0:
                at = pos + 1
                break
        ranked.insert(at, (index, load, speed))
    return [index for index, _, _ in ranked]


def decide(request, machines):
    """Returns (decision, rejected): decision is a list of machine indices (try, best first),
    DECLINE or POSTPONE; rejected is a list of (index, reason) in file order."""
    candidates = []
    reasons = {}
    right_type = False
    for index, machine in enumerate(machines):
        problems = eligibility_problems(request, machine)
        if problems:
            reasons[index] = "; ".join(problems)
            continue
        right_type = True
        busy = busy_reason(machine)
        if busy is not None:
            reasons[index] = busy
        else:
            candidates.append((index, machine.slots_in_use, machine.speed_factor))
    rejected = [(index, reasons[index]) for index in range(len(machines)) if index in reasons]
    ranked = rank(candidates)
    if ranked:
        return ranked, rejected
    can_build_locally = request.am_willing and request.could_build_locally
    if right_type and not can_build_locally:
        return POSTPONE, rejected
    return DECLINE, rejected
