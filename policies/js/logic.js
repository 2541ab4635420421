// Nix's own choice of build machine, in plain JavaScript (no bindings): the same rules, order
// and words as the default policy (policies/default/src/logic.rs), so that this component and
// the default give the same answer, rejections included. See policies/python/logic.py for the
// rules in prose. Fields are the WIT names in camelCase, as componentize-js passes them.

// Why `machine` is not eligible for `request`, one phrase per broken rule, in Nix's order.
export function eligibilityProblems(request, machine) {
  const problems = [];
  if (!machine.enabled) {
    // Since WIT 0.2.0 the host says why; absent when it does not know.
    problems.push(machine.downReason != null ? machine.downReason : "disabled: connection failed earlier");
  }
  if (request.system !== "builtin" && !machine.systems.includes(request.system)) {
    const systems = machine.systems.length ? machine.systems.join(", ") : "none";
    problems.push(`system \`${request.system}\` is not among its systems (${systems})`);
  }
  for (const f of request.requiredFeatures) {
    if (!machine.supportedFeatures.includes(f) && !machine.mandatoryFeatures.includes(f)) {
      problems.push(`does not support the required feature \`${f}\``);
    }
  }
  for (const f of machine.mandatoryFeatures) {
    if (!request.requiredFeatures.includes(f)) {
      problems.push(`mandatory feature \`${f}\` is not among the derivation's required features`);
    }
  }
  return problems;
}

export function busyReason(machine) {
  if (machine.maxJobs === 0) return "max-jobs is 0: it never takes a build";
  if (machine.slotsInUse >= machine.maxJobs) {
    return machine.maxJobs === 1 ? "its 1 slot is in use" : `all ${machine.maxJobs} slots in use`;
  }
  return null;
}

// Orders numbers as `<` does, with NaN after every number (and equal to NaN). JavaScript's
// `/` is IEEE 754 division already (x / 0 is ±Infinity, 0 / 0 NaN), as in Rust.
function compareFloats(a, b) {
  const an = Number.isNaN(a), bn = Number.isNaN(b);
  if (an || bn) return Number(an) - Number(bn);
  return (a > b) - (a < b);
}

function compareCandidates([loadA, speedA], [loadB, speedB]) {
  return compareFloats(loadA / speedA, loadB / speedB) || compareFloats(speedB, speedA) || (loadA > loadB) - (loadA < loadB);
}

// A stable insertion sort, as the default does: equal machines keep file order.
function rank(candidates) {
  const ranked = [];
  for (const c of candidates) {
    let at = 0;
    for (let pos = ranked.length - 1; pos >= 0; pos--) {
      if (compareCandidates([ranked[pos].load, ranked[pos].speed], [c.load, c.speed]) <= 0) {
        at = pos + 1;
        break;
      }
    }
    ranked.splice(at, 0, c);
  }
  return ranked.map((c) => c.index);
}

export function decide(request, machines) {
  const candidates = [];
  const rejected = [];
  let rightType = false;
  machines.forEach((machine, index) => {
    const problems = eligibilityProblems(request, machine);
    if (problems.length) {
      rejected.push({ machine: index, reason: problems.join("; ") });
      return;
    }
    rightType = true;
    const busy = busyReason(machine);
    if (busy !== null) rejected.push({ machine: index, reason: busy });
    else candidates.push({ index, load: machine.slotsInUse, speed: machine.speedFactor });
  });
  const ranked = rank(candidates);
  // list<u32> is a Uint32Array in the JavaScript bindings.
  if (ranked.length) return { decision: { tag: "try", val: new Uint32Array(ranked) }, rejected };
  const canBuildLocally = request.amWilling && request.couldBuildLocally;
  const decision = rightType && !canBuildLocally ? { tag: "postpone" } : { tag: "decline" };
  return { decision, rejected };
}
