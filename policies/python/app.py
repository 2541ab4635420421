"""The component glue: exports `nix-wasm-hook:policy/policy` (wit/policy.wit) with the rules of
`logic.py`. componentize-py generates `wit_world` from wit/ at build time
(`cargo xtask build-other-policies`); nothing generated is committed.
"""

import logic
from wit_world import exports
from wit_world.exports import policy as wit


class Policy(exports.Policy):
    def decide(self, request: wit.Request, machines: list[wit.Machine]) -> wit.Answer:
        decision, rejected = logic.decide(request, machines)
        if decision == logic.DECLINE:
            wit_decision = wit.Decision_Decline()
        elif decision == logic.POSTPONE:
            wit_decision = wit.Decision_Postpone()
        else:
            wit_decision = wit.Decision_Try(decision)
        return wit.Answer(
            wit_decision, [wit.Rejection(index, reason) for index, reason in rejected]
        )
